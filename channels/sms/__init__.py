"""SMS out and back, a module per noun: the channel, the providers (Twilio, a generic HTTP gateway)
and their settings, delivery receipts, and the STOP/START keywords recipients reply with."""
