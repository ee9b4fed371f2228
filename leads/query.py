"""Query building blocks shared by the lead list and segments: Unicode-aware text folding and
custom-field (JSON) access on SQLite and PostgreSQL (paging is core.paging)."""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, or_
from sqlalchemy.ext.asyncio import AsyncSession

from leads.models import Lead

FOLD_FUNCTION = "nurture_fold"
_folding_ready: weakref.WeakSet[Any] = weakref.WeakSet()


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
