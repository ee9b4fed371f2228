"""The sweeper: finds work that Redis forgot and hands it back. Redis is only a nudge; the database
says what is due. An event relayed long ago and still not done (its job was lost with a flushed or
restarted Redis, or never came back from a killed worker) is put back in front of the relay; each
domain's sweeps (declared in its jobs.py) do the same for their own due work."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update

from core import clock
from core.db import Database, skip_locked
from core.logging import get_logger
from core.outbox import OutboxEvent, nudge, outbox_t
from worker.registry import Registry

log = get_logger("worker.sweeper")


@dataclass
class Swept:
    events: int = 0
    work: dict[str, int] = field(default_factory=dict)  # per domain sweep: how much it set going again

    @property
    def total(self) -> int:
        return self.events + sum(self.work.values())


async def sweep(db: Database, lease_seconds: float, registry: Registry | None = None, batch: int = 1000) -> Swept:
    """One pass. `lease_seconds` is how long a relayed event may take before it counts as lost:
    longer than a job may run plus its retries' first waits, so live jobs are left alone (and a
    job Redis still holds is not queued twice: its id comes from its events' ids)."""
    swept = Swept()
    cutoff = clock.now() - timedelta(seconds=lease_seconds)
    async with db.sessions() as session:
        query = (
            select(OutboxEvent.id)
            .where(OutboxEvent.done_at.is_(None), OutboxEvent.relayed_at < cutoff)
            .order_by(OutboxEvent.relayed_at)
            .limit(batch)
        )
        stuck = list(await session.scalars(skip_locked(query, session)))
        if stuck:
            await session.execute(update(outbox_t).where(outbox_t.c.id.in_(stuck)).values(relayed_at=None))
        await session.commit()
    swept.events = len(stuck)
    for domain_sweep in registry.sweeps if registry else ():
        try:
            async with db.sessions() as session:
                found = await domain_sweep.run(session, batch)
                await session.commit()
        except Exception as exc:  # one broken sweep does not stop the others
            log.warning("sweep failed", sweep=domain_sweep.name, error=repr(exc))
            continue
        if found:
            swept.work[domain_sweep.name] = found
    if swept.total:
        nudge()
    return swept
