"""A `nurture worker` for tests that kill it: the real worker with one extra handler whose effect
(a note on the lead) shows whether an event was applied once. Run: python -m tests.worker_process."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy.ext.asyncio import AsyncSession

from core import logging as logs
from core.events import Event, handles
from core.settings import Settings
from leads.models import Activity
from tests.events import Work
from worker.main import run_worker


@handles(Work.name, name="tests.note")
async def note(session: AsyncSession, event: Event) -> None:
    """The effect: one note per event, written in the handler's transaction."""
    work = event.read(Work)
    await asyncio.sleep(work.work_seconds)  # stands for real work in progress
    session.add(Activity(lead_id=work.lead_id, type="note", data={"event_id": str(event.id)}))


if __name__ == "__main__":
    database_url, redis_url = sys.argv[1], sys.argv[2]
    logs.configure("WARNING", json=True)
    settings = Settings(
        database_url=database_url, redis_url=redis_url, worker_concurrency=4,
        job_timeout=5, job_retry_seconds=0.05, outbox_poll_seconds=0.5, sweep_seconds=3600, events_per_job=5,
    )
    asyncio.run(run_worker(settings, redis_url, [note]))
