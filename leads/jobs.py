"""The leads domain's event handlers (run by the worker, once per event)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.events import Event, handles_batch
from leads.models import Segment
from leads.segments import place_lead


@handles_batch("lead.created", "lead.updated", "lead.activity", "lead.merged", name="leads.place_in_segments")
async def place_in_segments(session: AsyncSession, events: list[Event]) -> None:
    """Segments follow a lead within a second of a change instead of at the next refresh; a lead
    that did several things in one job is placed once."""
    if await session.scalar(select(Segment.id).limit(1)) is None:
        return  # no segment to be in
    leads = dict.fromkeys(
        uuid.UUID(str(lead_id)) for e in events
        if (lead_id := e.payload.get("survivor_id") or e.payload.get("lead_id"))
    )
    for lead_id in leads:
        await place_lead(session, lead_id)
