"""The leads domain's event handlers (run by the worker, once per event)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from core.events import Event, handles
from leads.segments import place_lead


@handles("lead.created", "lead.updated", "lead.activity", "lead.merged", name="leads.place_in_segments")
async def place_in_segments(session: AsyncSession, event: Event) -> None:
    """Segments follow a lead within a second of a change instead of at the next refresh."""
    lead_id = event.payload.get("survivor_id") or event.payload.get("lead_id")
    if lead_id:
        await place_lead(session, uuid.UUID(str(lead_id)))
