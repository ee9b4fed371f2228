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


def find_nul(value: object, path: str = "") -> str | None:
    """The path of the first text holding a NUL character (PostgreSQL refuses to store one)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            if found := find_nul(item, where):
                return found
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if found := find_nul(item, f"{path}.{i}" if path else str(i)):
                return found
    return None


def refuse_nul(value: object) -> None:
    if (field := find_nul(value)) is not None:
        raise Invalid("must not contain NUL characters", field=field or None)
