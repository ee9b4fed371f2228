"""Query building blocks shared by the lead list and segments: Unicode-aware text folding,
custom-field (JSON) access on SQLite and PostgreSQL, and keyset pagination with opaque cursors.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core import clock
from core.errors import Invalid
from leads.models import Lead

FOLD_FUNCTION = "nurture_fold"
_folding_ready: weakref.WeakSet[Any] = weakref.WeakSet()
MAX_LIMIT = 500


def fold(value: str) -> str:
    """How search compares text: lower case (Unicode), and ё read as е, as Russian users type."""
    return value.lower().replace("ё", "е")


def _fold_sql(value: str | None) -> str | None:
    return None if value is None else fold(value)


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def prepare_folding(session: AsyncSession) -> None:
    """Register `nurture_fold` on this SQLite connection: SQLite's lower() folds ASCII only,
    so "ИВАН" would never match "иван". PostgreSQL's lower() follows the database's locale."""
    if dialect_name(session) != "sqlite":
        return

    def register(sync_session: Any) -> None:
        dbapi = sync_session.connection().connection.dbapi_connection
        if dbapi.driver_connection not in _folding_ready:
            dbapi.create_function(FOLD_FUNCTION, 1, _fold_sql, deterministic=True)
            _folding_ready.add(dbapi.driver_connection)

    await session.run_sync(register)


def folded(session: AsyncSession, column: Any) -> ColumnElement[Any]:
    """SQL for `fold(column)`; call `prepare_folding` on the session first."""
    if dialect_name(session) == "sqlite":
        return getattr(func, FOLD_FUNCTION)(column)  # type: ignore[no-any-return]
    return func.replace(func.lower(column), "ё", "е")


def folded_contains(session: AsyncSession, column: Any, needle: str) -> ColumnElement[bool]:
    return folded(session, column).contains(fold(needle), autoescape=True)


def folded_starts_with(session: AsyncSession, column: Any, needle: str) -> ColumnElement[bool]:
    return folded(session, column).startswith(fold(needle), autoescape=True)


class CustomValue:
    """SQL access to one key of Lead.custom, typed, on either database.

    A value of the wrong JSON type reads as NULL instead of failing the cast (a field that was
    deleted and re-created with another type must not make PostgreSQL raise)."""

    def __init__(self, session: AsyncSession, key: str) -> None:
        self.sqlite = dialect_name(session) == "sqlite"
        self.key = key

    def json_type(self) -> ColumnElement[Any]:
        # Both answer NULL for a missing key; SQLite says integer/real/text/true/false/null,
        # PostgreSQL number/string/boolean/null.
        if self.sqlite:
            return func.json_type(Lead.custom, self._path())
        return func.jsonb_typeof(func.jsonb_extract_path(Lead.custom, literal(self.key)))

    def _path(self) -> str:
        return '$."' + self.key.replace('"', "") + '"'

    def _raw_text(self) -> ColumnElement[Any]:
        if self.sqlite:
            return func.json_extract(Lead.custom, self._path())
        return func.jsonb_extract_path_text(Lead.custom, literal(self.key))

    def text(self) -> ColumnElement[Any]:
        kinds = ("text",) if self.sqlite else ("string",)
        return case((self.json_type().in_(kinds), self._raw_text()), else_=None)

    def number(self) -> ColumnElement[Any]:
        kinds = ("integer", "real") if self.sqlite else ("number",)
        if self.sqlite:
            value: Any = self._raw_text()
        else:
            value = func.cast(self._raw_text(), _numeric())
        return case((self.json_type().in_(kinds), value), else_=None)

    def boolean(self) -> ColumnElement[Any]:
        if self.sqlite:
            return case((self.json_type() == "true", True), (self.json_type() == "false", False), else_=None)
        return case(
            (self.json_type() == "boolean", self._raw_text() == "true"), else_=None
        )

    def is_empty(self) -> ColumnElement[bool]:
        return or_(
            self.json_type().is_(None),
            self.json_type() == "null",
            self.text() == "",
        )


def _numeric() -> Any:
    from sqlalchemy import Numeric

    return Numeric()


# Keyset pagination -------------------------------------------------------------------------


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
    """One page of `stmt` ordered by (at, id); the cursor names the last row seen, so rows added
    while a client pages never shift the pages (no duplicates, no skips)."""
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
