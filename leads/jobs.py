"""The leads domain's event handlers (run by the worker, once per event)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.events import Event, handles_batch
from leads.events import LeadActivity, LeadCreated, LeadMerged, LeadUpdated
from leads.models import Segment
from leads.segments import place_lead


@handles_batch(
    LeadCreated.name, LeadUpdated.name, LeadActivity.name, LeadMerged.name, name="leads.place_in_segments",
)
async def place_in_segments(session: AsyncSession, events: list[Event]) -> None:
    """Segments follow a lead within a second of a change instead of at the next refresh; a lead
    that did several things in one job is placed once."""
    if await session.scalar(select(Segment.id).limit(1)) is None:
        return  # no segment to be in
    for lead_id in dict.fromkeys(map(_changed_lead, events)):
        await place_lead(session, lead_id)


def _changed_lead(event: Event) -> uuid.UUID:
    """The lead whose memberships may have changed: a merge's survivor, else the lead itself."""
    if event.name == LeadMerged.name:
        return event.read(LeadMerged).survivor_id
    return event.read(LeadCreated, LeadUpdated, LeadActivity).lead_id
