"""The event pipeline against real Redis and the real database: events committed by the app reach
their handlers within moments, each effect happens once whatever is killed or flushed, and a poison
event goes to the dead letters while the rest keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
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
from arq.constants import in_progress_key_prefix
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url

from core.db import Database, skip_locked
from core.events import Event, Handler, Sweep, handles, sweeps
from core.outbox import FailedEvent, OutboxEvent, RedisNudge, emit, set_nudge
from core.redis import EmbeddedRedis
from core.settings import Settings
from leads.models import Activity, Lead, Segment, SegmentMember
from tests.events import Poison, Work
from tests.worker_process import note
from worker.dispatch import Dispatcher
from worker.main import build_worker, finish_jobs, queue_pool
from worker.registry import Registry
from worker.relay import Relay
from worker.status import failed_events, pipeline_status, retry_failed
from worker.sweeper import sweep

ROOT = Path(__file__).resolve().parents[2]
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
                         handlers: list[Handler | Sweep]) -> AsyncIterator[None]:
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


async def emit_work(db: Database, lead_id: uuid.UUID, count: int, work_seconds: float = 0) -> list[uuid.UUID]:
    async with db.sessions() as session:
        events = [await emit(session, Work(lead_id=lead_id, work_seconds=work_seconds)) for _ in range(count)]
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
    events = await emit_work(db, lead_id, 10, work_seconds=0.01)
    first, second = (Dispatcher(db, Registry([note]), max_tries=3, retry_seconds=0.01) for _ in range(2))
    # two workers given overlapping groups at the same moment, then a late redelivery of all
    await asyncio.gather(first.dispatch(events[:7], 1), second.dispatch(events[3:], 1))
    await first.dispatch(events, 1)
    await second.dispatch(events, 2)
    assert sorted(await notes(db, lead_id)) == sorted(map(str, events))
    assert await pending(db) == 0


async def test_a_poison_event_goes_to_the_dead_letters_and_the_rest_keep_flowing(
    db: Database, settings: Settings, redis_url: str, queue: ArqRedis
) -> None:
    lead_id = await new_lead(db)
    broken = {"yes": True}

    @handles(Poison.name, name="tests.fragile")
    async def fragile(session: Any, event: Event) -> None:
        if broken["yes"]:
            raise RuntimeError("the downstream system refuses this event")
        session.add(Activity(lead_id=lead_id, type="note", data={"event_id": str(event.id)}))

    async with db.sessions() as session:
        poison = await emit(session, Poison(lead_id=lead_id))
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
        await eventually(lambda: some_notes(db, database_url, lead_id))
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


async def some_notes(db: Database, database_url: str, lead_id: uuid.UUID) -> bool:
    """Five notes committed. On SQLite they are counted without the app's BEGIN IMMEDIATE: a reader
    that waits for the write lock could be kept out until the busy worker had written every note."""
    if not db.sqlite:
        return len(await notes(db, lead_id)) >= 5
    with contextlib.closing(sqlite3.connect(make_url(database_url).database or "")) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM activities WHERE lead_id = ? AND type = 'note'", (lead_id.hex,)
        ).fetchone()
    return int(count) >= 5


async def test_a_dropped_postgresql_connection_leaves_nothing_half_applied(db: Database) -> None:
    if db.sqlite:
        pytest.skip("PostgreSQL only: a server-side connection kill")
    lead_id = await new_lead(db)
    [event_id] = await emit_work(db, lead_id, 1)
    killed = {"done": False}

    @handles(Work.name, name="tests.cut_off")
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
    await dispatcher.dispatch([event_id], 1)  # the group's transaction dies; the event alone succeeds
    async with db.sessions() as session:
        kinds = sorted(await session.scalars(select(Activity.type).where(Activity.lead_id == lead_id)))
        failed = await session.scalar(select(func.count()).select_from(FailedEvent))
    assert kinds == ["call_answered", "note"] and failed == 0  # no second "note" from the cut transaction
    assert await pending(db) == 0


async def test_a_stopped_worker_finishes_the_job_in_hand_and_exits_cleanly(
    db: Database, database_url: str, redis_url: str, queue: ArqRedis
) -> None:
    lead_id = await new_lead(db)
    [event_id] = await emit_work(db, lead_id, 1, work_seconds=1.0)
    process = start_worker_process(database_url, redis_url)
    try:
        await eventually(lambda: job_in_progress(queue, str(event_id)))
        process.send_signal(signal.SIGTERM)  # as a deploy or Ctrl-C does
        assert process.wait(20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    assert await notes(db, lead_id) == [str(event_id)] and await pending(db) == 0


async def job_in_progress(queue: ArqRedis, job_id: str) -> bool:
    return bool(await queue.exists(in_progress_key_prefix + job_id))


class CountingRelay(Relay):
    passes = 0

    async def drain(self) -> int:
        self.passes += 1
        return await super().drain()


async def test_one_relay_queries_the_outbox_and_another_takes_over_when_it_stops(
    db: Database, queue: ArqRedis
) -> None:
    lead_id = await new_lead(db)
    first, second = (CountingRelay(db, queue, Registry([note]), name=name) for name in ("first", "second"))
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running = [asyncio.create_task(first.run(0.2, stop_first))]
    try:
        await eventually(lambda: relay_is(db, queue, "first"))
        running.append(asyncio.create_task(second.run(0.2, stop_second)))
        await emit_work(db, lead_id, 5)  # both hear the nudge; only the leader queries the outbox
        await eventually(lambda: unrelayed_is(db, 0))
        assert first.passes > 0 and second.passes == 0

        stop_first.set()  # a deploy stops the leading worker
        await running[0]
        await emit_work(db, lead_id, 5)
        await eventually(lambda: unrelayed_is(db, 0))
        assert second.passes > 0 and await relay_is(db, queue, "second")
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(*running)


async def relay_is(db: Database, queue: ArqRedis, name: str) -> bool:
    return bool((await pipeline_status(db, queue))["relay"] == name)


async def unrelayed_is(db: Database, expected: int) -> bool:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).where(OutboxEvent.relayed_at.is_(None))) == expected


async def test_a_domain_sweep_sets_due_work_going_once_however_many_workers_sweep(
    db: Database, settings: Settings, redis_url: str, queue: ArqRedis
) -> None:
    # stands for a campaign step whose time has come while Redis forgot its job: leads marked "due"
    leads = [await new_lead(db) for _ in range(6)]
    async with db.sessions() as session:
        await session.execute(update(Lead).where(Lead.id.in_(leads)).values(company="due"))
        await session.commit()

    @sweeps(name="tests.due_leads")
    async def due_leads(session: Any, limit: int) -> int:
        query = select(Lead.id).where(Lead.company == "due").order_by(Lead.id).limit(limit)
        due = list(await session.scalars(skip_locked(query, session)))
        await session.execute(update(Lead).where(Lead.id.in_(due)).values(company="swept"))
        for lead_id in due:
            await emit(session, Work(lead_id=lead_id))
        return len(due)

    registry = Registry([note, due_leads])
    three_workers = await asyncio.gather(*(sweep(db, 3600, registry) for _ in range(3)))
    assert sum(swept.work.get("tests.due_leads", 0) for swept in three_workers) == 6
    async with running_worker(settings, db, redis_url, [note, due_leads]):
        await eventually(lambda: pending_is(db, 0))
    assert [len(await notes(db, lead_id)) for lead_id in leads] == [1] * 6
    assert sum((await sweep(db, 3600, registry)).work.values()) == 0  # nothing due any more
