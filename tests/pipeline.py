"""Running the event pipeline inside a test, without Redis: every undone event is dispatched by
the real dispatcher (handled-event records, groups of events, the domains' handlers) until none
is left. For tests of what handlers do; tests/worker/test_worker.py covers the relay, Redis and workers."""

from __future__ import annotations

from sqlalchemy import func, select

from core.db import Database
from core.outbox import FailedEvent, OutboxEvent
from worker.dispatch import Dispatcher
from worker.registry import Registry, load_registry


async def run_events(db: Database, registry: Registry | None = None, per_job: int = 50) -> int:
    """Handle every pending event (and those their handlers emit); returns how many. A handler
    that fails fails the test, with its error."""
    dispatcher = Dispatcher(db, registry or load_registry(), max_tries=1, retry_seconds=0)
    total = 0
    for _ in range(1000):
        async with db.sessions() as session:
            pending = list(await session.scalars(
                select(OutboxEvent.id).where(OutboxEvent.done_at.is_(None))
                .order_by(OutboxEvent.created_at, OutboxEvent.id).limit(1000)
            ))
        if not pending:
            break
        for start in range(0, len(pending), per_job):
            await dispatcher.dispatch(pending[start:start + per_job], 1)
        total += len(pending)
        async with db.sessions() as session:
            if await session.scalar(select(func.count()).select_from(FailedEvent)):
                failed = await session.scalar(select(FailedEvent.error).limit(1))
                raise AssertionError(f"an event handler failed:\n{failed}")
    else:
        raise AssertionError("events kept coming")
    return total
