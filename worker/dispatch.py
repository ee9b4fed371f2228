"""Runs an event's handlers, each effect exactly once: the handler's effect and the record that
it ran (handled_events) commit together, so a redelivered or duplicated job finds the record and
does nothing. A handler that raises is retried with exponential backoff and jitter; after its
last try it becomes a dead letter (failed_events) and the event's other handlers go on."""

from __future__ import annotations

import random
import traceback
import uuid
from datetime import datetime
from typing import Any

from arq import Retry
from sqlalchemy import insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database
from core.events import Event, Handler
from core.logging import get_logger
from core.metrics import EVENT_LAG, EVENTS_DEAD, EVENTS_FAILED, EVENTS_HANDLED
from core.outbox import FailedEvent, HandledEvent, OutboxEvent
from worker.registry import Registry

log = get_logger("worker.dispatch")
DISPATCH_JOB = "events.dispatch"


def backoff(attempt: int, base: float, cap: float = 600.0) -> float:
    """Seconds before try `attempt + 1`: doubling from `base`, capped, with ±50% jitter so the
    retries of a burst of failures do not arrive together."""
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


class Dispatcher:
    def __init__(self, db: Database, registry: Registry, max_tries: int, retry_seconds: float) -> None:
        self.db = db
        self.registry = registry
        self.max_tries = max_tries
        self.retry_seconds = retry_seconds

    async def dispatch(self, event: Event, attempt: int) -> None:
        """Run the event's handlers; those that already applied their effect skip."""
        handlers = self.registry.for_event(event.name)
        EVENT_LAG.observe(max(0.0, (clock.now() - event.created_at).total_seconds()))
        retry = False
        for index, handler in enumerate(handlers):
            finish = index == len(handlers) - 1 and not retry
            try:
                await self._apply(handler, event, finish)
            except Exception as exc:
                EVENTS_FAILED.labels(handler.name).inc()
                if attempt < self.max_tries:
                    log.warning("handler failed, will retry", handler=handler.name, event_id=str(event.id),
                                attempt=attempt, error=repr(exc))
                    retry = True
                else:
                    await self._dead_letter(handler, event, attempt, exc, finish)
        if retry:
            raise Retry(defer=backoff(attempt, self.retry_seconds))

    async def _apply(self, handler: Handler, event: Event, finish: bool) -> None:
        async with self.db.sessions() as session:
            try:
                claimed = await _claim(session, handler.name, event.id)
            except IntegrityError:  # the event itself is gone (erased with its lead): nothing to do
                return
            if claimed:
                await handler.run(session, event)
            if finish:
                await _mark_done(session, event.id)
            await session.commit()
        if claimed:
            EVENTS_HANDLED.labels(handler.name).inc()

    async def _dead_letter(self, handler: Handler, event: Event, attempts: int, exc: Exception, finish: bool) -> None:
        EVENTS_DEAD.labels(handler.name).inc()
        log.error("handler gave up", handler=handler.name, event_id=str(event.id), attempts=attempts, error=repr(exc))
        error = "".join(traceback.format_exception(exc))[-4000:]
        async with self.db.sessions() as session:
            session.add(FailedEvent(event_id=event.id, handler=handler.name, attempts=attempts, error=error))
            if finish:
                await _mark_done(session, event.id)
            try:
                await session.commit()
            except IntegrityError:  # the event was deleted meanwhile
                await session.rollback()


async def _claim(session: AsyncSession, handler: str, event_id: uuid.UUID) -> bool:
    """Record that `handler` handles the event, in the transaction of its effect. False when a
    previous delivery already did; a concurrent delivery waits on the key, then gets False."""
    values = {"handler": handler, "event_id": event_id, "handled_at": clock.now()}
    dialect = session.get_bind().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = pg_insert(HandledEvent).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite_insert(HandledEvent).values(values).on_conflict_do_nothing()
    else:
        statement = insert(HandledEvent).values(values)
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def _mark_done(session: AsyncSession, event_id: uuid.UUID) -> None:
    await session.execute(update(OutboxEvent).where(OutboxEvent.id == event_id).values(done_at=clock.now()))


async def dispatch_job(ctx: dict[str, Any], event_id: str, name: str, payload: dict[str, Any], created_at: str) -> None:
    """The arq job: a thin shell around Dispatcher.dispatch (job id = event id)."""
    event = Event(id=uuid.UUID(event_id), name=name, payload=payload, created_at=datetime.fromisoformat(created_at))
    dispatcher: Dispatcher = ctx["dispatcher"]
    await dispatcher.dispatch(event, ctx.get("job_try", 1))
