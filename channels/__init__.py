"""Outbound channels and what comes back from them: email (bounces, complaints, auto-replies) for now."""
