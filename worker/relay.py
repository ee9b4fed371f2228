"""The outbox relay: moves committed events to the job queue in commit order, then marks them
relayed. Events taken together go in jobs of up to `per_job` events (a job id derived from the
event ids, so relaying the same events twice queues them once). It wakes on a Redis nudge right
after a commit, and polls slowly in case a nudge is lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import select, update

from core import clock
from core.db import Database, skip_locked
from core.logging import get_logger
from core.metrics import EVENTS_RELAYED
from core.outbox import OutboxEvent, nudge_channel, outbox_t
from core.retry import wait_or_stop
from worker.dispatch import DISPATCH_JOB, job_id
from worker.registry import Registry

log = get_logger("worker.relay")
LEADER_KEY = "nurture:relay:leader"

# take the lead when nobody has it, keep it when it is ours; 1 when we hold it afterwards
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leadership:
    """One relay at a time makes the passes (a lease in Redis), so several workers do not all wake
    and query the outbox on every commit. The others keep listening: they take the lead at their
    next nudge or poll once the leader lets it go (on stop) or its lease runs out (it died).
    Two relays overlapping for a moment is harmless: each takes only rows the other has not locked."""

    def __init__(self, redis: ArqRedis, name: str, lease_seconds: float) -> None:
        self.redis = redis
        self.name = name
        self.lease_ms = int(lease_seconds * 1000)
        self.renew_at = 0.0  # monotonic time after which the lease is renewed (a third of it in)
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        now = time.monotonic()
        if now < self.renew_at:
            return True
        held = bool(await self._hold(keys=[LEADER_KEY], args=[self.name, self.lease_ms]))
        self.renew_at = now + self.lease_ms / 3000 if held else 0.0
        return held

    async def release(self) -> None:
        self.renew_at = 0.0
        await self._release(keys=[LEADER_KEY], args=[self.name])


class Relay:
    def __init__(self, db: Database, queue: ArqRedis, registry: Registry, batch: int = 500, per_job: int = 50,
                 on_queued: Callable[[], None] | None = None, name: str | None = None) -> None:
        self.name = name or uuid.uuid4().hex
        self.db = db
        self.queue = queue
        self.registry = registry
        self.batch = batch
        self.per_job = per_job
        self.on_queued = on_queued  # the worker in this process: look for jobs now

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
            rows = (await session.execute(skip_locked(query, session))).all()
            if not rows:
                return 0
            jobs = [row for row in rows if self.registry.for_event(row.name)]
            idle = [row.id for row in rows if not self.registry.for_event(row.name)]
            await self.enqueue(jobs)
            now = clock.now()
            table = outbox_t  # Core, not the ORM: this runs for every pass
            if jobs:
                await session.execute(
                    update(table).where(table.c.id.in_([row.id for row in jobs])).values(relayed_at=now)
                )
            if idle:  # nobody handles these (yet): done as soon as relayed
                await session.execute(update(table).where(table.c.id.in_(idle)).values(relayed_at=now, done_at=now))
            await session.commit()
        EVENTS_RELAYED.inc(len(rows))
        return len(rows)

    async def enqueue(self, rows: list[Any]) -> None:
        # In commit order; the queue keeps an existing job with the same id, so a re-relay is harmless.
        groups = [[row.id for row in rows[i:i + self.per_job]] for i in range(0, len(rows), self.per_job)]
        await asyncio.gather(*(
            self.queue.enqueue_job(DISPATCH_JOB, [str(i) for i in ids], _job_id=job_id(ids)) for ids in groups
        ))
        if groups and self.on_queued is not None:
            self.on_queued()

    async def drain(self) -> int:
        total = 0
        while (taken := await self.relay_once()) > 0:
            total += taken
            if taken < self.batch:
                break
        return total

    async def run(self, poll_seconds: float, stop: asyncio.Event) -> None:
        """Relay until `stop` is set: at once after each nudge, else every `poll_seconds`, while
        this relay holds the lead (see Leadership)."""
        leadership = Leadership(self.queue, self.name, lease_seconds=3 * poll_seconds + 1)
        channel = nudge_channel(self.queue)
        pubsub = self.queue.pubsub()
        await pubsub.subscribe(channel)
        try:
            while not stop.is_set():
                try:
                    if await leadership.hold():
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
                        await pubsub.subscribe(channel)
        finally:
            with contextlib.suppress(Exception):
                await leadership.release()
            with contextlib.suppress(Exception):
                await pubsub.aclose()
