"""How the channels' lists page and filter: newest first by id, with the house's cursor, and the
text filters people type."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import CapturedMail, Message, Suppression
from core.text import check_text
from leads.query import Page, decode_cursor, encode_cursor

RowT = TypeVar("RowT", CapturedMail, Message, Suppression)


async def newest_first(session: AsyncSession, stmt: Select[Any], model: type[RowT], at: str,
                       cursor: str | None, limit: int) -> Page:
    """A page of rows, newest first, by id: ids are time-ordered (UUIDv7) and the primary key's index serves
    the order on the big tables (a sort by time would read the whole ledger). The cursor is the house's
    (time, id) cursor; only its id is compared."""
    if cursor:
        _, seen = decode_cursor(cursor)
        stmt = stmt.where(model.id < seen)
    rows = list(await session.scalars(stmt.order_by(model.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], at), rows[-1].id) if more and rows else None
    return Page(items=rows, next_cursor=next_cursor)


def text_filter(value: str | None, field: str) -> str | None:
    """A filter as typed: None when left blank, else trimmed (and checked for text no database stores)."""
    if value is None or not value.strip():
        return None
    check_text(value, field)
    return value.strip()
