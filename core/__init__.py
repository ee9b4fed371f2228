"""Shared foundations: settings, database, errors, clock, ids, tokens, outbox, auth, logging."""
