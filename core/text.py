"""Text both databases can store: PostgreSQL refuses NUL characters and lone surrogates."""

from __future__ import annotations

from typing import Any

from core.errors import Invalid


def check_text(value: Any, field: str = "") -> None:
    """Refuse text no database can store anywhere in a JSON-like value, naming where it is."""
    if isinstance(value, str):
        if "\x00" in value:
            raise Invalid("must not contain NUL characters", field=field or None)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("must be valid Unicode text", field=field or None) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, field)
            check_text(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_text(item, f"{field}.{index}" if field else str(index))


def scrub(value: str) -> str:
    """For text from the wild that we keep as found (headers, referrers): drop NULs, repair
    undecodable bytes instead of refusing the whole message."""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def text_filter(value: str | None, field: str) -> str | None:
    """A list filter as typed: None when left blank, else trimmed (and checked like any text)."""
    if value is None or not value.strip():
        return None
    check_text(value, field)
    return value.strip()
