"""Runs events' handlers, each effect exactly once: a handler's effect and the record that it ran
(handled_events) commit together, so a redelivered or duplicated job finds the record and does
nothing.

A job carries the ids of the events one relay pass took together. They are first handled in one
transaction (one claim statement, one done statement: the cost of a transaction is shared); if
anything in it fails, each event's handlers run again in a transaction of their own, so one bad
event fails alone. A handler that raises is retried with exponential backoff and jitter; after its
last try it becomes a dead letter (failed_events) and the event's other handlers go on."""

from __future__ import annotations

import hashlib
import traceback
import uuid
from collections.abc import Sequence
from typing import Any

from arq import Retry
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database, insert_ignore, one_of
from core.events import BatchFunction, Event, Handler
from core.logging import get_logger
from core.metrics import EVENT_LAG, EVENTS_DEAD, EVENTS_FAILED, EVENTS_HANDLED
from core.outbox import FailedEvent, handled_t, outbox_t
from core.retry import backoff
from worker.registry import Registry

log = get_logger("worker.dispatch")
DISPATCH_JOB = "events.dispatch"


def job_id(event_ids: Sequence[uuid.UUID]) -> str:
    """The job id of a group of events: the event's own id for one event, else derived from all
    of them, so the same group relayed twice is queued once."""
    if len(event_ids) == 1:
        return str(event_ids[0])
    digest = hashlib.blake2b(b"".join(i.bytes for i in event_ids), digest_size=8).hexdigest()
    return f"{event_ids[0]}+{len(event_ids) - 1}.{digest}"


class Dispatcher:
    def __init__(self, db: Database, registry: Registry, max_tries: int, retry_seconds: float) -> None:
        self.db = db
        self.registry = registry
        self.max_tries = max_tries
        self.retry_seconds = retry_seconds

    async def dispatch(self, event_ids: Sequence[uuid.UUID], attempt: int) -> None:
        """Run the handlers of the events not yet done; raises arq's Retry when a handler failed
        and has tries left (the events whose handlers all succeeded are done by then)."""
        if attempt == 1:
            try:
                await self._apply_together(event_ids)
                return
            except Exception as exc:  # one event spoils the group: each goes alone below
                log.info("group of events failed, handling them one by one", events=len(event_ids), error=repr(exc))
        retry = False
        for event in await self._load(event_ids):
            retry |= await self._dispatch_alone(event, attempt)
        if retry:
            raise Retry(defer=backoff(attempt, self.retry_seconds))

    async def _load(self, event_ids: Sequence[uuid.UUID], session: AsyncSession | None = None) -> list[Event]:
        if session is None:
            async with self.db.sessions() as own:
                return await self._load(event_ids, own)
        query = (
            select(outbox_t.c.id, outbox_t.c.name, outbox_t.c.payload, outbox_t.c.created_at)
            .where(one_of(session, outbox_t.c.id, event_ids), outbox_t.c.done_at.is_(None))
            .order_by(outbox_t.c.created_at, outbox_t.c.id)
        )
        rows = (await session.execute(query)).all()
        events = [Event(id=row.id, name=row.name, payload=row.payload, created_at=row.created_at) for row in rows]
        now = clock.now()
        for event in events:
            EVENT_LAG.observe(max(0.0, (now - event.created_at).total_seconds()))
        return events

    async def _apply_together(self, event_ids: Sequence[uuid.UUID]) -> None:
        async with self.db.sessions() as session:
            events = await self._load(event_ids, session)
            if not events:
                return
            claimed = await _claim(session, sorted(
                (event.id, handler.name) for event in events for handler in self.registry.for_event(event.name)
            ))
            batches: dict[BatchFunction, list[Event]] = {}  # each batch handler runs once, on all its events
            for event in events:
                for handler in self.registry.for_event(event.name):
                    if (event.id, handler.name) not in claimed:
                        continue
                    if handler.run_many is not None:
                        batches.setdefault(handler.run_many, []).append(event)
                    else:
                        await handler.run(session, event)
            for run_many, batch in batches.items():
                await run_many(session, batch)
            await _mark_done(session, [event.id for event in events])
            await session.commit()
        for _, handler_name in claimed:
            EVENTS_HANDLED.labels(handler_name).inc()

    async def _dispatch_alone(self, event: Event, attempt: int) -> bool:
        """Each handler of `event` in its own transaction; True when one should be tried again."""
        handlers = self.registry.for_event(event.name)
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
        return retry

    async def _apply(self, handler: Handler, event: Event, finish: bool) -> None:
        async with self.db.sessions() as session:
            try:
                claimed = bool(await _claim(session, [(event.id, handler.name)]))
            except IntegrityError:  # the event itself is gone (erased with its lead): nothing to do
                return
            if claimed:
                await handler.run(session, event)
            if finish:
                await _mark_done(session, [event.id])
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
                await _mark_done(session, [event.id])
            try:
                await session.commit()
            except IntegrityError:  # the event was deleted meanwhile
                await session.rollback()


async def _claim(session: AsyncSession, pairs: Sequence[tuple[uuid.UUID, str]]) -> set[tuple[uuid.UUID, str]]:
    """Record that each handler handles its event, in the transaction of the effects; returns the
    pairs this delivery claimed. A pair a previous delivery already recorded is left out; a
    concurrent delivery waits on the key, then leaves it out. Pairs come sorted, so two groups
    take their keys in the same order and never deadlock on each other."""
    if not pairs:
        return set()
    now = clock.now()
    # Core, not the ORM: this runs for every group of events
    statement = insert_ignore(session, handled_t).returning(handled_t.c.event_id, handled_t.c.handler)
    values = [{"event_id": event_id, "handler": handler, "handled_at": now} for event_id, handler in pairs]
    return {(row.event_id, row.handler) for row in await session.execute(statement, values)}


async def _mark_done(session: AsyncSession, event_ids: Sequence[uuid.UUID]) -> None:
    await session.execute(update(outbox_t).where(one_of(session, outbox_t.c.id, event_ids)).values(done_at=clock.now()))


async def dispatch_job(ctx: dict[str, Any], event_ids: list[str]) -> None:
    """The arq job: a thin shell around Dispatcher.dispatch (see job_id for its id)."""
    dispatcher: Dispatcher = ctx["dispatcher"]
    await dispatcher.dispatch([uuid.UUID(i) for i in event_ids], ctx.get("job_try", 1))

