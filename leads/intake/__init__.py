"""Intake channels: forms, phone calls, inbound email, CSV import."""

from __future__ import annotations

from pydantic import ValidationError

from core.errors import Invalid


def invalid_from(exc: ValidationError) -> Invalid:
    """The first pydantic error as an Invalid naming its field (`fields.2.type`), all in details."""
    errors = exc.errors()
    field = ".".join(str(p) for p in errors[0]["loc"]) or None if errors else None
    message = str(errors[0]["msg"] if errors else "invalid value").removeprefix("Value error, ")
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
        for e in errors
    ]
    return Invalid(message, field=field, details=details)
