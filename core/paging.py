"""Keyset pagination with opaque cursors, shared by every list the API serves: a cursor names the
last row seen, so rows added while a client pages never shift the pages (no duplicates, no skips).
By (time, id), or newest first by id alone where ids are time-ordered."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core import clock
from core.errors import Invalid

MAX_LIMIT = 500


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([clock.as_utc(at).isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        return clock.as_utc(datetime.fromisoformat(at)), uuid.UUID(row_id)
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error, UnicodeDecodeError):
        raise Invalid("is not a cursor this API gave out", field="cursor") from None


def parse_limit(value: Any, default: int = 50) -> int:
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise Invalid(f"must be a whole number from 1 to {MAX_LIMIT}", field="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"must be a whole number from 1 to {MAX_LIMIT}", field="limit")
    return limit


async def keyset_page(
    session: AsyncSession,
    stmt: Select[Any],
    at: InstrumentedAttribute[Any],
    row_id: InstrumentedAttribute[Any],
    cursor: str | None,
    limit: int,
    newest_first: bool = False,
) -> Page:
    """One page of `stmt` ordered by (at, id), after the row the cursor names."""
    if cursor:
        seen_at, seen_id = decode_cursor(cursor)
        if newest_first:
            stmt = stmt.where(or_(at < seen_at, and_(at == seen_at, row_id < seen_id)))
        else:
            stmt = stmt.where(or_(at > seen_at, and_(at == seen_at, row_id > seen_id)))
    order: Sequence[Any] = (at.desc(), row_id.desc()) if newest_first else (at.asc(), row_id.asc())
    rows = list((await session.scalars(stmt.order_by(*order).limit(limit + 1))).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(getattr(last, at.key), getattr(last, row_id.key))
    return Page(items=rows, next_cursor=next_cursor)


async def newest_first(session: AsyncSession, stmt: Select[Any], model: Any, at: str,
                       cursor: str | None, limit: int) -> Page:
    """A page of `model`'s rows, newest first, by id: ids are time-ordered (UUIDv7) and the primary
    key's index serves the order on big tables (a sort by time would read a whole ledger). The
    cursor is the usual (time, id) cursor, the time taken from the row's `at`; only its id is compared."""
    if cursor:
        _, seen = decode_cursor(cursor)
        stmt = stmt.where(model.id < seen)
    rows = list(await session.scalars(stmt.order_by(model.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], at), rows[-1].id) if more and rows else None
    return Page(items=rows, next_cursor=next_cursor)
