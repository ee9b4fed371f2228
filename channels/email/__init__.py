"""The email channel: reading what mail systems send back about our messages."""
