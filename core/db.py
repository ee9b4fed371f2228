"""Async engine, the one session factory, the declarative Base, and per-key write locks.

SQLite (the zero-setup default) runs in WAL mode with a busy timeout and foreign keys on; every
transaction starts with BEGIN IMMEDIATE so concurrent writers queue instead of failing with
"database is locked" when a read turns into a write. PostgreSQL runs through asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import JSON, DateTime, Index, MetaData, Select, Table, any_, bindparam, event, insert, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from core import clock
from core.errors import Conflict
from core.ids import new_id

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return clock.as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else clock.as_utc(value)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)


def partial_index(name: str, *columns: str, where: str) -> Index:
    """An index of the rows `where` holds, the same on PostgreSQL and SQLite. (Alembic's
    autogenerate does not compare the WHERE; a test in tests/core/test_core.py holds migrations to it.)"""
    condition = text(where)
    return Index(name, *columns, postgresql_where=condition, sqlite_where=condition)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def async_url(url: str) -> str:
    """The URL with an async driver: postgresql:// (as tools write it) means asyncpg,
    sqlite:// means aiosqlite."""
    parsed = make_url(url)
    driver = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
    if parsed.drivername in driver:
        parsed = parsed.set(drivername=driver[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    url = async_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            from pathlib import Path

            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, json_deserializer=orjson.loads)
        _configure_sqlite(engine)
        return engine
    # Plans per execution, not the generic plan PostgreSQL settles on after five runs of a prepared
    # statement: for `id IN (…)` over a batch's ids the generic plan walks a whole index (measured:
    # 4–7 ms instead of 0.5–0.8 ms per statement on the scoring path).
    # No JIT compilation: nurture's statements are short, and the planner's cost of a batch's
    # thousand index probes crosses JIT's thresholds, so a 25 ms look-up spent 565 ms compiling
    # (an import of 100,000 rows took twice as long).
    settings = {"plan_cache_mode": "force_custom_plan", "jit": "off"}
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size,
                                 connect_args={"server_settings": settings}, json_deserializer=orjson.loads)
    engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
    _check_alive_on_checkout(engine)
    return engine


def _check_alive_on_checkout(engine: AsyncEngine) -> None:
    """A pooled connection the server has closed (a restart, an idle timeout, a terminated
    backend) is replaced before use, at no round trip: asyncpg already knows its socket closed.

    SQLAlchemy's own `pool_pre_ping` costs three round trips on asyncpg (BEGIN, a ping,
    ROLLBACK) on every checkout: measured, a third of a grouped form write's round trips."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine and the one session factory of a process."""

    def __init__(self, url: str, pool_size: int = 20) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.sqlite = is_sqlite(url)
        self._group_writes: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def group_write(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Held around each transaction of a group commit (core.groupcommit). SQLite writes one
        transaction at a time: the groups of one process (form posts, page views, captured mail)
        take turns here, in order, instead of in SQLite's busy handler, which sleeps in steps of up
        to 100 ms. PostgreSQL: nothing; its advisory locks order the writers of one identity."""
        if not self.sqlite:
            return contextlib.nullcontext()
        loop = asyncio.get_running_loop()
        if self._group_writes is None or self._group_writes[0] is not loop:  # tests run apps on new loops
            self._group_writes = (loop, asyncio.Lock())
        return self._group_writes[1]

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


# One round trip; unnest keeps the sorted order, so two writers never deadlock.
_LOCKS = ("SELECT count(pg_advisory_xact_lock(k)) FROM "
          "(SELECT k FROM unnest({ids}) WITH ORDINALITY AS t(k, n) ORDER BY n) AS s")
_LOCKS_BOUND = text(_LOCKS.format(ids="CAST(:ids AS bigint[])"))


def _lock_ids(keys: Iterable[str]) -> list[int]:
    """The advisory-lock ids of the keys, sorted: writers taking several never deadlock."""
    return sorted({lock_key_id(k) for k in keys if k})


async def lock_keys(session: AsyncSession, *keys: str) -> None:
    """Serialise writers that work on the same identity (an email, a phone) until commit.

    PostgreSQL: transaction-scoped advisory locks, taken in sorted order so two writers
    never deadlock. SQLite: BEGIN IMMEDIATE already serialises every writer.
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if ids := _lock_ids(keys):
        await session.execute(_LOCKS_BOUND, {"ids": ids})


_DRIVER = "nurture.driver_connection"  # session.info key: the driver connection of a locked_transaction
_PLANNED_ONCE = "nurture.planned_once"  # session.info key: the transaction plans statements once (see below)
_PLAN_ONCE = "SET LOCAL plan_cache_mode = force_generic_plan"


@contextlib.asynccontextmanager
async def locked_transaction(
    session: AsyncSession, keys: Iterable[str] = (), planned_once: bool = False
) -> AsyncIterator[None]:
    """A transaction that holds the advisory locks of `keys` (as `lock_keys`) and commits when the
    block ends; an error in the block rolls it back. For the group commits of intake, where every
    round trip is paid by each request in the group.

    PostgreSQL: BEGIN and the locks go in one round trip (SQLAlchemy would send BEGIN on its own)
    and COMMIT is sent here; the session's commit then only tells its listeners (the outbox nudge).
    SQLite: BEGIN IMMEDIATE already serialises writers; the session commits.

    `planned_once`: the block's statements suit any plan (look-ups by index probe, inserts from
    JSON), so PostgreSQL plans each once per connection (its generic plan) instead of at every
    execution as nurture's connections ask (`create_engine`). Above all its foreign-key checks, one
    per row and key: planned anew each time they were 40% of PostgreSQL's time on a group of form
    posts. A lone post's look-up, planned anew, was a third of PostgreSQL's time for it. A block
    that goes on to statements that need their own plan calls `plan_each_execution` first.
    """
    if session.get_bind().dialect.name != "postgresql":
        yield
        await session.commit()
        return
    connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    driver: Any = (await connection.get_raw_connection()).driver_connection
    session.info[_DRIVER] = driver  # the block's statements reach it without asking SQLAlchemy again
    ids = _lock_ids(keys)
    # Integers only, written into the text: the simple protocol that takes two statements at once
    # has no parameters.
    locks = "; " + _LOCKS.format(ids=f"'{{{','.join(map(str, ids))}}}'::bigint[]")
    plans = "; " + _PLAN_ONCE if planned_once else ""
    await driver.execute("BEGIN" + plans + (locks if ids else ""))
    session.info[_PLANNED_ONCE] = planned_once
    try:
        yield
        await driver.execute("COMMIT")
    except BaseException:
        try:
            await driver.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - a broken connection: the pool must not hand it out again
            await connection.invalidate()
        raise
    finally:
        session.info.pop(_DRIVER, None)
        session.info.pop(_PLANNED_ONCE, None)
    await session.commit()


async def plan_once(session: AsyncSession) -> bool:
    """Plan each statement once per connection for the rest of the transaction, as in a
    `planned_once` one, before statements that suit any plan; True when this call made the change
    (the caller then calls `plan_each_execution` once they are done)."""
    if session.get_bind().dialect.name != "postgresql" or session.info.get(_PLANNED_ONCE):
        return False
    await (await driver_connection(session)).execute(_PLAN_ONCE)
    session.info[_PLANNED_ONCE] = True
    return True


async def plan_each_execution(session: AsyncSession) -> None:
    """Back to planning every execution, inside a `planned_once` transaction, for statements whose
    best plan depends on their values or on how big the tables have grown since they were first
    planned (a plan made while a table was small reads all of it later on)."""
    if session.info.pop(_PLANNED_ONCE, False):
        await (await driver_connection(session)).execute("SET LOCAL plan_cache_mode = force_custom_plan")


SelectT = TypeVar("SelectT", bound=Select[Any])


def skip_locked(query: SelectT, session: AsyncSession) -> SelectT:
    """Lock the rows `query` picks, skipping rows another transaction holds: several workers share
    due work (relay, sweeps) without waiting on or repeating each other. PostgreSQL only; SQLite
    runs one writer at a time anyway."""
    if session.get_bind().dialect.name != "postgresql":
        return query
    return query.with_for_update(skip_locked=True)


def one_of(session: AsyncSession, column: Any, values: Sequence[Any]) -> Any:
    """`column IN values`. On PostgreSQL `column = ANY(:array)`: one statement text whatever the
    count, so the driver's prepared statement is reused and nothing is re-rendered per call (an
    IN list is a new text for every length). For the hot paths that take a batch's ids."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(values)
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


async def driver_connection(session: AsyncSession) -> Any:
    """The driver's connection under the session (asyncpg's on PostgreSQL), inside the session's
    transaction: for COPY and for statements run without SQLAlchemy's work per statement."""
    if (driver := session.info.get(_DRIVER)) is not None:
        return driver
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


def insert_ignore(session: AsyncSession, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on PostgreSQL and SQLite (a plain INSERT elsewhere)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing()
    return insert(table)


def upsert(session: AsyncSession, table: Table, key: list[str], column: str) -> Any:
    """INSERT … ON CONFLICT (key) DO UPDATE SET column = the new value (PostgreSQL, SQLite)."""
    statement: Any = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)
    return statement.on_conflict_do_update(index_elements=key, set_={column: getattr(statement.excluded, column)})


async def flush_unique(session: AsyncSession, conflict: Conflict) -> None:
    """Flush new rows; a unique constraint won by a concurrent writer (SQLite has no advisory
    lock, and a check-then-insert can race) becomes `conflict` instead of a 500."""
    try:
        await session.flush()
    except IntegrityError:
        raise conflict from None


def lock_key_id(key: str) -> int:
    """The 64-bit advisory-lock id of an identity key (stable across processes and versions)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)
