"""The outbox relay: moves committed events to the job queue in commit order, one job per event
with the event's id as the job id (so relaying an event twice queues it once), then marks them
relayed. It wakes on a Redis nudge right after a commit, and polls slowly in case a nudge is lost."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import select, update

from core import clock
from core.db import Database
from core.logging import get_logger
from core.metrics import EVENTS_RELAYED
from core.outbox import NUDGE_CHANNEL, OutboxEvent
from worker.dispatch import DISPATCH_JOB
from worker.registry import Registry

log = get_logger("worker.relay")


class Relay:
    def __init__(self, db: Database, queue: ArqRedis, registry: Registry, batch: int = 500) -> None:
        self.db = db
        self.queue = queue
        self.registry = registry
        self.batch = batch

    async def relay_once(self) -> int:
        """Relay up to `batch` events; returns how many were taken. Several relays (one per worker)
        share the work on PostgreSQL: rows another relay holds are skipped, not waited for."""
        async with self.db.sessions() as session:
            query = (
                select(OutboxEvent.id, OutboxEvent.name, OutboxEvent.payload, OutboxEvent.created_at)
                .where(OutboxEvent.relayed_at.is_(None))
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
                .limit(self.batch)
            )
            if not self.db.sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            if not rows:
                return 0
            jobs = [row for row in rows if self.registry.for_event(row.name)]
            idle = [row.id for row in rows if not self.registry.for_event(row.name)]
            await self.enqueue(jobs)
            now = clock.now()
            if jobs:
                await session.execute(
                    update(OutboxEvent).where(OutboxEvent.id.in_([row.id for row in jobs])).values(relayed_at=now)
                )
            if idle:  # nobody handles these (yet): done as soon as relayed
                await session.execute(
                    update(OutboxEvent).where(OutboxEvent.id.in_(idle)).values(relayed_at=now, done_at=now)
                )
            await session.commit()
        EVENTS_RELAYED.inc(len(rows))
        return len(rows)

    async def enqueue(self, rows: list[Any]) -> None:
        # In commit order; the queue keeps an existing job with the same id, so a re-relay is harmless.
        await asyncio.gather(*(
            self.queue.enqueue_job(
                DISPATCH_JOB, str(row.id), row.name, row.payload, row.created_at.isoformat(), _job_id=str(row.id)
            )
            for row in rows
        ))

    async def drain(self) -> int:
        total = 0
        while (taken := await self.relay_once()) > 0:
            total += taken
            if taken < self.batch:
                break
        return total

    async def run(self, poll_seconds: float, stop: asyncio.Event) -> None:
        """Relay until `stop` is set: at once after each nudge, else every `poll_seconds`."""
        pubsub = self.queue.pubsub()
        await pubsub.subscribe(NUDGE_CHANNEL)
        try:
            while not stop.is_set():
                try:
                    await self.drain()
                except Exception as exc:  # the database or Redis is away: try again at the next poll
                    log.warning("relay failed", error=repr(exc))
                    await wait_or_stop(stop, poll_seconds)
                    continue
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_seconds)
                    while message is not None:  # fold a burst of nudges into one pass
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                except Exception:  # Redis restarted: poll, and listen again once it is back
                    await wait_or_stop(stop, poll_seconds)
                    with contextlib.suppress(Exception):
                        await pubsub.subscribe(NUDGE_CHANNEL)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
