"""Merging two leads that turned out to be one person: the survivor takes the other's history."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import lock_keys
from core.errors import Conflict, Invalid, NotFound
from core.outbox import emit
from leads.events import LeadMerged
from leads.models import (
    Activity,
    Consent,
    CustomerStatus,
    InboundEmail,
    Lead,
    LeadAlias,
    LeadTag,
    SegmentMember,
    Touchpoint,
    Visitor,
)
from leads.schemas import PROFILE_FIELDS
from leads.segments import leave_segment


async def _load(session: AsyncSession, lead_id: uuid.UUID, field: str) -> Lead:
    # populate_existing: the rows may have changed while we waited for the lock.
    lead = await session.get(Lead, lead_id, populate_existing=True)
    if lead is None:
        raise NotFound(f"no lead {lead_id}", field=field)
    if lead.merged_into_id is not None:
        raise Conflict(f"lead {lead_id} was already merged into {lead.merged_into_id}", field=field)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead_id} was erased", field=field)
    return lead


async def merge_leads(session: AsyncSession, survivor_id: uuid.UUID, other_id: uuid.UUID) -> Lead:
    """Move everything of `other_id` onto `survivor_id`. Never commits.

    The survivor keeps its own values; its empty profile fields are filled from the other, and
    custom values merge with the survivor winning. The other keeps a row pointing at the survivor
    (with email and phone cleared, so the unique email stays unique) so old ids still resolve, and
    an email or phone the survivor did not take becomes an alias that still finds the survivor.
    """
    if survivor_id == other_id:
        raise Invalid("a lead cannot be merged into itself", field="other_id")
    # Both ids locked (sorted inside lock_keys), so two merges over the same leads queue up.
    await lock_keys(session, f"lead-id:{survivor_id}", f"lead-id:{other_id}")
    survivor = await _load(session, survivor_id, "lead_id")
    other = await _load(session, other_id, "other_id")
    await lock_keys(session, *(f"lead:{k}" for k in (survivor.email, survivor.phone, other.email, other.phone) if k))

    taken = {key: getattr(other, key) for key in PROFILE_FIELDS}
    filled = []
    other.email = None
    other.phone = None
    other.merged_into_id = survivor.id
    other.updated_at = clock.now()
    await session.flush()  # free the unique email before the survivor may take it
    for key, value in taken.items():
        if value in (None, ""):
            continue
        current = getattr(survivor, key)
        empty = current in (None, "") or (key == "customer_status" and current == CustomerStatus.new.value)
        if empty and current != value:
            setattr(survivor, key, value)
            filled.append(key)
    if survivor.owner_id is None and other.owner_id is not None:
        survivor.owner_id = other.owner_id
        filled.append("owner_id")
    for kind in ("email", "phone"):
        if taken[kind] and getattr(survivor, kind) != taken[kind]:
            session.add(LeadAlias(merged_id=other.id, kind=kind, value=taken[kind], lead_id=survivor.id))
    custom: dict[str, Any] = {**(other.custom or {})}
    custom.update({k: v for k, v in (survivor.custom or {}).items() if v is not None})
    survivor.custom = custom

    have = {t.tag for t in survivor.tags}
    survivor.tags.extend(LeadTag(tag=t.tag) for t in other.tags if t.tag not in have)
    other.tags.clear()

    for table in (Touchpoint, Activity, Consent, Visitor, InboundEmail):
        await session.execute(update(table).where(table.lead_id == other.id).values(lead_id=survivor.id))
    # Leads merged into the other earlier now point straight at the survivor, and so do their
    # old addresses.
    await session.execute(update(Lead).where(Lead.merged_into_id == other.id).values(merged_into_id=survivor.id))
    await session.execute(update(LeadAlias).where(LeadAlias.lead_id == other.id).values(lead_id=survivor.id))
    await _move_memberships(session, other.id, survivor.id)

    now = clock.now()
    survivor.updated_at = now
    merged = Activity(
        lead_id=survivor.id, type="merged",
        data={"merged_id": str(other.id), "email": taken["email"], "phone": taken["phone"], "filled": filled},
        occurred_at=now,
    )
    session.add(merged)
    await session.flush()
    await emit(session, LeadMerged(survivor_id=survivor.id, merged_id=other.id, filled=filled))
    return survivor


async def _move_memberships(session: AsyncSession, other_id: uuid.UUID, survivor_id: uuid.UUID) -> None:
    """The survivor takes the other's segment memberships. Where both were members, the segment
    now counts one person fewer: the other leaves it (announced, as a refresh would)."""
    memberships = list(await session.scalars(select(SegmentMember).where(SegmentMember.lead_id == other_id)))
    if not memberships:
        return
    # Same lock as a refresh, so the count it writes and this change do not cross.
    await lock_keys(session, *(f"segment:{m.segment_id}" for m in memberships))
    kept = set(await session.scalars(select(SegmentMember.segment_id).where(SegmentMember.lead_id == survivor_id)))
    for member in sorted(memberships, key=lambda m: m.segment_id):
        if member.segment_id in kept:
            await leave_segment(session, member.segment_id, other_id)
        else:
            session.add(SegmentMember(segment_id=member.segment_id, lead_id=survivor_id, entered_at=member.entered_at))
        await session.delete(member)
