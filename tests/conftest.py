"""Fixtures: a real database per test session (SQLite file, or a fresh PostgreSQL database when
NURTURE_TEST_DATABASE_URL is set), migrated with Alembic, emptied between tests; the app over
real HTTP semantics through httpx's ASGI transport; a frozen clock on request.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

import channels.models
from app.domains import install
from core import clock
from core.auth import Scope, create_api_key
from core.db import Base, Database
from core.domains import event_types
from core.outbox import outbox_t
from core.settings import Settings, use_settings
from migrations import upgrade
from tests.events import TEST_EVENTS

PG_URL = os.environ.get("NURTURE_TEST_DATABASE_URL", "")
DOMAINS = install()  # what the app and the workers run
TABLES = [t for t in Base.metadata.sorted_tables if t.name in {t.name for d in DOMAINS for t in d.tables()}]


def _database_url(tmp: Path) -> str:
    if not PG_URL:
        return f"sqlite+aiosqlite:///{tmp / 'test.db'}"
    # A database of our own, so parallel runs and earlier crashes never interfere.
    name = f"nurture_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(PG_URL).set(drivername="postgresql+asyncpg")

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(admin.set(drivername="postgresql").render_as_string(hide_password=False))
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    return admin.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    if not PG_URL:
        return
    import asyncpg

    target = make_url(url)

    async def drop() -> None:
        admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nurture")


@pytest.fixture(scope="session")
def database_url(data_dir: Path) -> Iterator[str]:
    url = _database_url(data_dir)

    async def migrate() -> None:
        db = Database(url)
        await upgrade(db.engine)
        await db.dispose()

    asyncio.run(migrate())
    yield url
    _drop_database(url)


@pytest.fixture
def settings(data_dir: Path, database_url: str) -> Iterator[Settings]:
    """The test's settings, also what event handlers read (`core.settings.current_settings`)."""
    chosen = Settings(
        data_dir=data_dir, database_url=database_url, secret_keys="test-key-new,test-key-old",
        call_webhook_secret="call-secret", form_rate_limit=1000, log_json=False,
    )
    use_settings(chosen)
    yield chosen
    use_settings(None)


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await empty_tables(database)
    await database.dispose()


async def empty_tables(database: Database) -> None:
    """Empty every table so each test starts from nothing (fast on both databases); the test fails
    if it left an outbox event that is not of a declared type (see undeclared_events)."""
    async with database.engine.begin() as conn:
        wrong = undeclared_events((await conn.execute(select(outbox_t.c.name, outbox_t.c.payload))).all())
        tables = [t.name for t in reversed(TABLES)]
        if database.sqlite:
            for name in tables:
                await conn.execute(text(f'DELETE FROM "{name}"'))
        else:
            await conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in tables) + " CASCADE"))
    if wrong:
        pytest.fail("events not of their declared type:\n" + "\n".join(wrong), pytrace=False)


def undeclared_events(rows: Sequence[Any]) -> list[str]:
    """Every event emitted anywhere is in the catalogue (or one of the tests' own) and its stored
    payload reads as its declared type, payloads blanked by an erasure included."""
    known = {**event_types(), **{kind.name: kind for kind in TEST_EVENTS}}
    wrong = []
    for name, payload in rows:
        if (kind := known.get(name)) is None:
            wrong.append(f"{name}: not in the event catalogue")
            continue
        try:
            kind.model_validate(payload)
        except ValidationError as exc:
            wrong.append(f"{name} {payload}: {exc}")
    return wrong


@pytest_asyncio.fixture
async def app(settings: Settings, db: Database):  # type: ignore[no-untyped-def]
    from app.main import create_app

    return create_app(settings, db)


@pytest_asyncio.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def stored_message(db: Database, message_id: uuid.UUID) -> channels.models.Message:
    """An outgoing message as it is stored now."""
    async with db.sessions() as session:
        found = await session.get(channels.models.Message, message_id)
    assert found is not None
    return found


async def make_key(db: Database, *scopes: str) -> str:
    async with db.sessions() as session:
        _key, raw = await create_api_key(session, "test", list(scopes))
        await session.commit()
    return raw


@pytest_asyncio.fixture
async def admin_headers(db: Database) -> dict[str, str]:
    return {"authorization": f"Bearer {await make_key(db, Scope.admin.value)}"}


@pytest.fixture
def frozen_now() -> Iterator[datetime]:
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    with clock.frozen(at):
        yield at
