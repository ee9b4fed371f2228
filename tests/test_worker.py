"""The event pipeline against real Redis and the real database: events committed by the app reach
their handlers within moments, each effect happens once whatever is killed or flushed, and a poison
event goes to the dead letters while the rest keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from arq.connections import ArqRedis
from sqlalchemy import func, select, text

from core import clock
from core.db import Database
from core.events import Event, Handler, handles
from core.outbox import FailedEvent, OutboxEvent, RedisNudge, emit, set_nudge
from core.redis import EmbeddedRedis
from core.settings import Settings
from leads.models import Activity, Lead, Segment, SegmentMember
from tests.worker_process import note
from worker.dispatch import Dispatcher
from worker.main import build_worker, finish_jobs, queue_pool
from worker.registry import Registry
from worker.relay import Relay
from worker.status import failed_events, pipeline_status, retry_failed
from worker.sweeper import sweep

ROOT = Path(__file__).resolve().parents[1]
TEST_REDIS = os.environ.get("NURTURE_TEST_REDIS_URL", "")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if TEST_REDIS:
        yield TEST_REDIS.rsplit("/", 1)[0] + "/7"  # a database of the tests' own
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as embedded:
        yield embedded.url


@pytest_asyncio.fixture
async def queue(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await queue_pool(redis_url)
    await pool.flushdb()
    set_nudge(RedisNudge(pool))
    yield pool
    set_nudge(None)
    await pool.flushdb()
    await pool.aclose()


def worker_settings(settings: Settings, redis_url: str, **changes: Any) -> Settings:
    return settings.model_copy(update={
        "redis_url": redis_url, "job_timeout": 5, "job_max_tries": 3, "job_retry_seconds": 0.02,
        "outbox_poll_seconds": 0.2, "sweep_seconds": 3600, **changes,
    })


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, db: Database, redis_url: str,
                         handlers: list[Handler]) -> AsyncIterator[None]:
    worker = build_worker(worker_settings(settings, redis_url), db, redis_url, handlers, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield
    finally:
        await finish_jobs(worker, seconds=5)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    """Wait for the pipeline to get somewhere (it runs in other tasks/processes), with a deadline."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("the pipeline did not get there in time")
        await asyncio.sleep(0.05)


async def new_lead(db: Database) -> uuid.UUID:
    async with db.sessions() as session:
        lead = Lead(email=f"{uuid.uuid4().hex[:8]}@example.com", source_channel="api")
        session.add(lead)
        await session.commit()
        return lead.id


async def emit_work(db: Database, lead_id: uuid.UUID, count: int, **payload: Any) -> list[uuid.UUID]:
    async with db.sessions() as session:
        events = [await emit(session, "test.work", {"lead_id": lead_id, **payload}) for _ in range(count)]
        await session.commit()
        return [e.id for e in events]


async def notes(db: Database, lead_id: uuid.UUID) -> list[str]:
    async with db.sessions() as session:
        rows = await session.scalars(select(Activity.data).where(Activity.lead_id == lead_id, Activity.type == "note"))
        return [row["event_id"] for row in rows]


async def pending(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).where(OutboxEvent.done_at.is_(None))) or 0)


async def test_a_form_post_puts_the_lead_in_its_segment_within_moments(
    client: Any, admin_headers: dict[str, str], db: Database, settings: Settings, redis_url: str, queue: ArqRedis
) -> None:
    segment = await client.post("/v1/segments", headers=admin_headers,
                                json={"name": "Москва", "filter": {"field": "city", "op": "eq", "value": "Москва"}})
    assert segment.status_code == 201, segment.text
    created = await client.post("/v1/leads", headers=admin_headers,
                                json={"email": "anna@example.ru", "city": "Москва"})
    assert created.status_code == 201, created.text
    lead_id = uuid.UUID(created.json()["id"])

    async def member() -> bool:
        async with db.sessions() as session:
            return bool(await session.scalar(select(func.count()).where(SegmentMember.lead_id == lead_id)))

    async with running_worker(settings, db, redis_url, []):
        await eventually(member)
        await eventually(lambda: pending_is(db, 0))
    async with db.sessions() as session:
        entered = await session.scalar(select(func.count()).where(OutboxEvent.name == "segment.entered"))
        count = await session.scalar(select(Segment.member_count))
    assert entered == 1 and count == 1


async def pending_is(db: Database, expected: int) -> bool:
    return await pending(db) == expected


async def test_a_redelivered_or_duplicated_event_has_its_effect_once(db: Database) -> None:
    lead_id = await new_lead(db)
    [event_id] = await emit_work(db, lead_id, 1)
    event = Event(id=event_id, name="test.work", payload={"lead_id": str(lead_id), "work_seconds": 0.05},
                  created_at=clock.now())
    first, second = (Dispatcher(db, Registry([note]), max_tries=3, retry_seconds=0.01) for _ in range(2))
    # two workers given the same event at the same moment, then a late redelivery
    await asyncio.gather(first.dispatch(event, 1), second.dispatch(event, 1))
    await first.dispatch(event, 2)
    assert await notes(db, lead_id) == [str(event_id)]
    assert await pending(db) == 0


async def test_a_poison_event_goes_to_the_dead_letters_and_the_rest_keep_flowing(
    db: Database, settings: Settings, redis_url: str, queue: ArqRedis
) -> None:
    lead_id = await new_lead(db)
    broken = {"yes": True}

    @handles("test.poison", name="tests.fragile")
    async def fragile(session: Any, event: Event) -> None:
        if broken["yes"]:
            raise RuntimeError("the downstream system refuses this event")
        session.add(Activity(lead_id=lead_id, type="note", data={"event_id": str(event.id)}))

    async with db.sessions() as session:
        poison = await emit(session, "test.poison", {"lead_id": lead_id})
        await session.commit()
    good = await emit_work(db, lead_id, 5)
    async with running_worker(settings, db, redis_url, [note, fragile]):
        await eventually(lambda: pending_is(db, 0))
        assert sorted(await notes(db, lead_id)) == sorted(map(str, good))
        async with db.sessions() as session:
            [dead] = await failed_events(session)
        assert (dead.event_id, dead.handler, dead.attempts) == (poison.id, "tests.fragile", 3)
        assert "refuses this event" in dead.error
        status = await pipeline_status(db, queue)
        assert status["dead_letters"] == 1 and status["events_pending"] == 0 and len(status["workers"]) == 1

        broken["yes"] = False  # the downstream system is fixed; an operator retries
        async with db.sessions() as session:
            assert await retry_failed(session, None) == 1
            await session.commit()
        await eventually(lambda: has_note(db, lead_id, poison.id))
    async with db.sessions() as session:
        assert await failed_events(session) == []


async def has_note(db: Database, lead_id: uuid.UUID, event_id: uuid.UUID) -> bool:
    return str(event_id) in await notes(db, lead_id)


async def test_events_relayed_before_redis_was_flushed_are_handled_after_the_sweep(
    db: Database, settings: Settings, redis_url: str, queue: ArqRedis
) -> None:
    lead_id = await new_lead(db)
    events = await emit_work(db, lead_id, 20)
    assert await Relay(db, queue, Registry([note])).drain() == 20  # in Redis, not yet run...
    await queue.flushdb()  # ...and Redis forgets them
    async with running_worker(settings, db, redis_url, [note]):
        async with db.sessions() as session:
            relayed = await session.scalar(select(func.count()).where(OutboxEvent.relayed_at.is_not(None)))
        assert relayed == 20 and await notes(db, lead_id) == []
        assert (await sweep(db, lease_seconds=0)).events == 20
        await eventually(lambda: pending_is(db, 0))
    assert sorted(await notes(db, lead_id)) == sorted(map(str, events))


def start_worker_process(database_url: str, redis_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.worker_process", database_url, redis_url],
                            cwd=ROOT, env=env)


async def test_a_worker_killed_mid_batch_loses_and_repeats_nothing(
    db: Database, database_url: str, redis_url: str, queue: ArqRedis
) -> None:
    lead_id = await new_lead(db)
    events = await emit_work(db, lead_id, 60, work_seconds=0.05)
    first = start_worker_process(database_url, redis_url)
    try:
        await eventually(lambda: some_notes(db, lead_id))
        first.send_signal(signal.SIGKILL)  # in the middle: jobs running, jobs queued
        first.wait(10)
        assert 0 < len(await notes(db, lead_id)) < 60
        second = start_worker_process(database_url, redis_url)
        try:
            await eventually(lambda: pending_is(db, 0), seconds=60)
        finally:
            second.terminate()
            second.wait(20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
    handled = await notes(db, lead_id)
    assert sorted(handled) == sorted(map(str, events))  # every event once: none lost, none twice


async def some_notes(db: Database, lead_id: uuid.UUID) -> bool:
    return len(await notes(db, lead_id)) >= 5


async def test_a_dropped_postgresql_connection_leaves_nothing_half_applied(db: Database) -> None:
    if db.sqlite:
        pytest.skip("PostgreSQL only: a server-side connection kill")
    lead_id = await new_lead(db)
    [event_id] = await emit_work(db, lead_id, 1)
    killed = {"done": False}

    @handles("test.work", name="tests.cut_off")
    async def cut_off(session: Any, event: Event) -> None:
        session.add(Activity(lead_id=lead_id, type="note", data={"event_id": str(event.id)}))
        await session.flush()  # half of the effect is on the server...
        if not killed["done"]:
            killed["done"] = True
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
            async with db.engine.connect() as other:  # ...when the connection is cut
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        session.add(Activity(lead_id=lead_id, type="call_answered", data={"event_id": str(event.id)}))

    dispatcher = Dispatcher(db, Registry([cut_off]), max_tries=3, retry_seconds=0.01)
    event = Event(id=event_id, name="test.work", payload={"lead_id": str(lead_id)},
                  created_at=clock.now())
    with pytest.raises(Exception):  # noqa: B017 - the first try fails (arq retries it)
        await dispatcher.dispatch(event, 1)
    assert await notes(db, lead_id) == [] and await pending(db) == 1
    await dispatcher.dispatch(event, 2)
    async with db.sessions() as session:
        kinds = sorted(await session.scalars(select(Activity.type).where(Activity.lead_id == lead_id)))
        failed = await session.scalar(select(func.count()).select_from(FailedEvent))
    assert kinds == ["call_answered", "note"] and failed == 0
