"""What `nurture status`, `nurture events …`, the /v1/events/failed API and /metrics report on the
event pipeline, and the dead-letter retry they share."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database
from core.errors import NotFound
from core.metrics import PIPELINE
from core.outbox import FailedEvent, OutboxEvent
from worker.main import HEARTBEAT_PREFIX, QUEUE
from worker.relay import LEADER_KEY


async def pipeline_status(db: Database, queue: ArqRedis | None) -> dict[str, Any]:
    """Queue depth, lag, dead letters and live workers; Redis figures are null when it is away."""
    now = clock.now()
    async with db.sessions() as session:
        unrelayed, oldest_unrelayed = (await session.execute(
            select(func.count(), func.min(OutboxEvent.created_at)).where(OutboxEvent.relayed_at.is_(None))
        )).one()
        undone, oldest_undone = (await session.execute(
            select(func.count(), func.min(OutboxEvent.created_at)).where(OutboxEvent.done_at.is_(None))
        )).one()
        failed = await session.scalar(
            select(func.count()).select_from(FailedEvent).where(FailedEvent.retried_at.is_(None))
        )
    status: dict[str, Any] = {
        "events_unrelayed": unrelayed,
        "events_pending": undone,
        "lag_seconds": round((now - oldest_undone).total_seconds(), 3) if oldest_undone else 0.0,
        "relay_lag_seconds": round((now - oldest_unrelayed).total_seconds(), 3) if oldest_unrelayed else 0.0,
        "dead_letters": failed or 0,
        "queue_depth": None,
        "queue_due": None,
        "workers": None,
        "relay": None,
    }
    if queue is not None:
        try:
            status["queue_depth"] = await queue.zcard(QUEUE)
            status["queue_due"] = await queue.zcount(QUEUE, 0, time.time() * 1000)
            status["workers"] = [json.loads(raw) for raw in await _heartbeats(queue) if raw]
            leader = await queue.get(LEADER_KEY)
            status["relay"] = leader.decode() if leader else None
        except Exception as exc:  # a status report never fails because Redis is down
            status["redis_error"] = type(exc).__name__
    return status


async def _heartbeats(queue: ArqRedis) -> list[Any]:
    keys = [key async for key in queue.scan_iter(match=HEARTBEAT_PREFIX + "*")]
    return list(await queue.mget(keys)) if keys else []


def export_metrics(status: dict[str, Any]) -> None:
    for measure in ("events_unrelayed", "events_pending", "lag_seconds", "relay_lag_seconds", "dead_letters",
                    "queue_depth", "queue_due"):
        if status.get(measure) is not None:
            PIPELINE.labels(measure).set(status[measure])
    if status.get("workers") is not None:
        PIPELINE.labels("workers_alive").set(len(status["workers"]))


async def failed_events(session: AsyncSession, limit: int = 100) -> list[FailedEvent]:
    return list(await session.scalars(
        select(FailedEvent).where(FailedEvent.retried_at.is_(None)).order_by(FailedEvent.failed_at).limit(limit)
    ))


async def retry_failed(session: AsyncSession, ids: list[uuid.UUID] | None) -> int:
    """Give the named dead letters (all open ones when `ids` is None) another round of tries: their
    events go back in front of the relay. The event's handlers that already applied their effect
    find their record and skip; the failed one runs again, and comes back here if it fails again."""
    query = select(FailedEvent).where(FailedEvent.retried_at.is_(None))
    if ids is not None:
        query = query.where(FailedEvent.id.in_(ids))
    failed = list(await session.scalars(query))
    if ids is not None and len(failed) < len(set(ids)):
        found = {f.id for f in failed}
        missing = next(i for i in ids if i not in found)
        raise NotFound(f"no open dead letter {missing}", field="id")
    if failed:
        await session.execute(
            update(FailedEvent).where(FailedEvent.id.in_([f.id for f in failed])).values(retried_at=clock.now())
        )
        await session.execute(
            update(OutboxEvent).where(OutboxEvent.id.in_({f.event_id for f in failed}))
            .values(relayed_at=None, done_at=None)
        )
        session.info["outbox"] = True  # the relay hears of it at commit
    return len(failed)


def failed_out(failed: FailedEvent, event_name: str | None = None) -> dict[str, Any]:
    return {
        "id": str(failed.id), "event_id": str(failed.event_id), "event": event_name, "handler": failed.handler,
        "attempts": failed.attempts, "error": failed.error.strip().splitlines()[-1] if failed.error else "",
        "failed_at": failed.failed_at.isoformat(),
    }
