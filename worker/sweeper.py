"""The sweeper: finds work that Redis forgot and hands it back. Redis is only a nudge; the database
says what is due. An event relayed long ago and still not done (its job was lost with a flushed or
restarted Redis, or never came back from a killed worker) is put back in front of the relay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from core import clock
from core.db import Database
from core.outbox import OutboxEvent, nudge


@dataclass
class Swept:
    events: int = 0


async def sweep(db: Database, lease_seconds: float, batch: int = 1000) -> Swept:
    """One pass. `lease_seconds` is how long a relayed event may take before it counts as lost:
    longer than a job may run plus its retries' first waits, so live jobs are left alone (a job
    Redis still holds is not queued twice anyway: the job id is the event id)."""
    swept = Swept()
    cutoff = clock.now() - timedelta(seconds=lease_seconds)
    async with db.sessions() as session:
        query = (
            select(OutboxEvent.id)
            .where(OutboxEvent.done_at.is_(None), OutboxEvent.relayed_at < cutoff)
            .order_by(OutboxEvent.relayed_at)
            .limit(batch)
        )
        if not db.sqlite:  # several workers sweep at once without waiting on each other
            query = query.with_for_update(skip_locked=True)
        stuck = list(await session.scalars(query))
        if stuck:
            await session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(stuck)).values(relayed_at=None))
        await session.commit()
    swept.events = len(stuck)
    if stuck:
        nudge()
    return swept
