"""Time-ordered ids (UUIDv7): sortable, so keyset pagination follows creation order.

RFC 9562 with a counter inside the millisecond: ids made in the same millisecond still sort in
the order they were made, and their time stays the real time however many are made (a generator
that bumps the timestamp instead runs minutes ahead of the clock during an import).
"""

from __future__ import annotations

import uuid

from uuid_utils import compat


def new_id() -> uuid.UUID:
    return compat.uuid7()


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    from core.errors import NotFound

    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no such {field}: {value!r}", field=field) from None
