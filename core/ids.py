"""Time-ordered ids (UUIDv7): sortable, so keyset pagination follows creation order."""

from __future__ import annotations

import uuid

import uuid6


def new_id() -> uuid.UUID:
    return uuid6.uuid7()


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    from core.errors import NotFound

    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no such {field}: {value!r}", field=field) from None
