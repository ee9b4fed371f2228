"""The data subject's rights (GDPR, 152-FZ): export everything held on a person, and erase it.

Erasure removes every personal value but keeps anonymous facts (the lead row with its channel and
erased_at, touchpoints' source/medium/campaign and times, activity types and times, consent
decisions without IPs, outbox events' names, ids and times) so reports still count the lead. It
keeps keyed one-way hashes (HMAC with the server's secret) of the email and phone, and of those the
person had on leads merged into theirs: enough to recognise them if a CRM sync or an old CSV
brings them back, which must not happen silently without a new consent.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import lock_keys
from core.domains import LeadIds, personal_data, row_values
from core.outbox import OutboxEvent, emit
from core.settings import Settings
from core.tokens import hmac_sha256
from leads.events import LeadErased
from leads.models import (
    Activity,
    Consent,
    InboundEmail,
    Lead,
    LeadAlias,
    LeadTag,
    Segment,
    SegmentMember,
    Touchpoint,
    Visitor,
)
from leads.schemas import PROFILE_FIELDS
from leads.segments import leave_segment

# Kept after erasure: describe a market, not a person, and feed the reports.
ANONYMOUS_FIELDS = frozenset({"country", "industry", "company_size", "customer_status"})
# Outbox payload keys that name the lead: events carrying one of the erased ids are blanked.
LEAD_KEYS = ("lead_id", "survivor_id", "merged_id")
# Payload values that describe the event, not the person: kept beside ids and times.
EVENT_FACTS = frozenset({"type", "channel", "campaign", "purpose", "form", "changed", "filled"})


def identity_hash(secret: str, kind: str, value: str) -> str:
    return hmac_sha256(secret, f"{kind}:{value}".encode())


async def find_erased(
    session: AsyncSession, email: str | None, phone: str | None, secrets: list[str]
) -> Lead | None:
    """The erased lead this (normalised) email or phone belonged to, if any.

    Every signing key is tried, so rotating NURTURE_SECRET_KEYS keeps old erasures recognised.
    Import and API intake call this before creating a lead: with no new consent they must skip.
    """
    conditions = []
    if email:
        conditions.append(Lead.erased_email_hash.in_([identity_hash(s, "email", email) for s in secrets]))
    if phone:
        conditions.append(Lead.erased_phone_hash.in_([identity_hash(s, "phone", phone) for s in secrets]))
    if not conditions:
        return None
    return await session.scalar(select(Lead).where(or_(*conditions)).limit(1))


async def _merged_ids(session: AsyncSession, lead_id: uuid.UUID) -> list[uuid.UUID]:
    """The lead and every lead merged into it, however deep the chain."""
    ids, frontier = [lead_id], [lead_id]
    while frontier and len(ids) < 10_000:
        frontier = list(await session.scalars(select(Lead.id).where(Lead.merged_into_id.in_(frontier))))
        ids.extend(frontier)
    return ids


async def erase_lead(session: AsyncSession, lead: Lead, settings: Settings) -> bool:
    """Erase the person behind `lead` (and the leads merged into it) in every domain that holds
    something on them (each erases its own part, in this transaction). Never commits.

    Returns False when it was already erased; a second run still scrubs anything that arrived
    since, so erasing is idempotent and never leaves personal values behind.
    """
    await lock_keys(session, f"lead-id:{lead.id}", *(f"lead:{k}" for k in (lead.email, lead.phone) if k))
    first_time = lead.erased_at is None
    ids = await _merged_ids(session, lead.id)
    secret = settings.signing_keys()[0]
    if lead.email:
        lead.erased_email_hash = identity_hash(secret, "email", lead.email)
    if lead.phone:
        lead.erased_phone_hash = identity_hash(secret, "phone", lead.phone)
    for part in personal_data():
        if part.erase is not None:
            await part.erase(session, ids, settings)
    await _blank_events(session, ids)
    now = clock.now()
    await session.execute(update(Lead).where(Lead.id.in_(ids), Lead.erased_at.is_(None)).values(erased_at=now))
    if first_time:
        session.add(Activity(lead_id=lead.id, type="erased", data={}, occurred_at=now))
        await emit(session, LeadErased(lead_id=lead.id, merged_ids=ids[1:]))
    await session.flush()
    # The bulk UPDATEs bypassed the identity map: reload so the caller sees the erased row.
    await session.refresh(lead)
    return first_time


# --- the leads domain's parts of a person's data (declared in leads.domain) ----------------------


async def erase_profiles(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    blank: dict[str, Any] = {k: None for k in PROFILE_FIELDS if k not in ANONYMOUS_FIELDS}
    blank["custom"] = {}
    await session.execute(update(Lead).where(Lead.id.in_(ids)).values(**blank))
    await session.execute(delete(LeadTag).where(LeadTag.lead_id.in_(ids)))


async def erase_visitors(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    await session.execute(delete(Visitor).where(Visitor.lead_id.in_(ids)))


async def erase_aliases(session: AsyncSession, ids: LeadIds, settings: Settings) -> None:
    await _forget_aliases(session, list(ids), settings.signing_keys()[0])


async def erase_memberships(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    await _leave_segments(session, list(ids))


async def erase_touchpoints(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    await session.execute(
        update(Touchpoint).where(Touchpoint.lead_id.in_(ids)).values(
            visitor_id=None, referrer=None, landing_page=None, content=None, term=None
        )
    )


async def erase_activities(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    # Activity data holds form answers, notes, call numbers, email subjects: all of it goes.
    await session.execute(update(Activity).where(Activity.lead_id.in_(ids)).values(data={}, visitor_id=None))


async def erase_consents(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    await session.execute(update(Consent).where(Consent.lead_id.in_(ids)).values(ip=None))


async def erase_inbound_emails(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    await session.execute(
        update(InboundEmail).where(InboundEmail.lead_id.in_(ids)).values(
            mail_from=None, rcpt_to=None, subject=None, in_reply_to=None, details={}, raw=None
        )
    )


async def _forget_aliases(session: AsyncSession, ids: list[uuid.UUID], secret: str) -> None:
    """Old emails and phones of the leads merged into this one go; each leaves its keyed hash on
    the merged lead's row, so find_erased still recognises it."""
    aliases = list(await session.scalars(select(LeadAlias).where(LeadAlias.lead_id.in_(ids))))
    for alias in aliases:
        column = "erased_email_hash" if alias.kind == "email" else "erased_phone_hash"
        hashed = identity_hash(secret, alias.kind, alias.value)
        await session.execute(update(Lead).where(Lead.id == alias.merged_id).values({column: hashed}))
    await session.execute(delete(LeadAlias).where(LeadAlias.lead_id.in_(ids)))


async def _leave_segments(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    """The person leaves every segment: counts drop and segment.left is announced, as a refresh
    would do, so campaigns waiting on the segment let go of them."""
    members = (
        await session.execute(
            select(SegmentMember.segment_id, SegmentMember.lead_id).where(SegmentMember.lead_id.in_(ids))
        )
    ).all()
    if not members:
        return
    await lock_keys(session, *(f"segment:{segment_id}" for segment_id, _ in members))
    await session.execute(delete(SegmentMember).where(SegmentMember.lead_id.in_(ids)))
    for segment_id, lead_id in sorted(members):
        await leave_segment(session, segment_id, lead_id)


async def _blank_events(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    """Outbox events about the person keep their name, ids and times; the rest of the payload
    (an address to confirm, a caller's number, a mail subject) goes, relayed or not."""
    wanted = [str(i) for i in ids]
    events = await session.scalars(
        select(OutboxEvent).where(or_(*(OutboxEvent.payload[key].as_string().in_(wanted) for key in LEAD_KEYS)))
    )
    for event in events:
        if (kept := blanked(event.payload)) != event.payload:
            event.payload = kept


def blanked(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored event payload about an erased person: ids, times and facts kept, the rest gone.
    Handlers that meet `erased` know the values were removed on purpose (see core.events)."""
    kept = {k: v for k, v in payload.items() if _anonymous(k, v)}
    return payload if kept == payload else {**kept, "erased": True}


def _anonymous(key: str, value: Any) -> bool:
    if key in EVENT_FACTS or key == "erased":
        return True
    if key.endswith("_at"):
        return value is None or isinstance(value, str) and _is_time(value)
    if key.endswith("_ids"):
        return isinstance(value, list) and all(_is_uuid(v) for v in value)
    # Only our own ids: a Message-ID or a PBX call id may name the sender's host or number.
    return key.endswith("_id") and (value is None or _is_uuid(value))


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _is_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


async def export_lead(session: AsyncSession, lead: Lead) -> dict[str, Any]:
    """Everything held on the person in every domain, as plain JSON-able data (times and ids as
    Python objects): each domain's part under its key."""
    ids = await _merged_ids(session, lead.id)
    out: dict[str, Any] = {"exported_at": clock.now()}
    for part in personal_data():
        out[part.key] = await part.export(session, ids)
    return out


async def _rows(session: AsyncSession, model: Any, where: Any, order: Any) -> list[Any]:
    return list(await session.scalars(select(model).where(where).order_by(order, model.id)))


async def export_profile(session: AsyncSession, ids: LeadIds) -> dict[str, Any]:
    lead = await session.get_one(Lead, ids[0])
    return _profile(lead)


async def export_merged_leads(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    merged = await _rows(session, Lead, Lead.id.in_(ids[1:]), Lead.created_at)
    return [_profile(m) | {"merged_into_id": m.merged_into_id} for m in merged]


async def export_visitors(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    found = await session.scalars(
        select(Visitor).where(Visitor.lead_id.in_(ids)).order_by(Visitor.first_seen_at, Visitor.visitor_id)
    )
    return [{"visitor_id": v.visitor_id, "first_seen_at": v.first_seen_at} for v in found]


async def export_touchpoints(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    found = await _rows(session, Touchpoint, Touchpoint.lead_id.in_(ids), Touchpoint.occurred_at)
    return [row_values(t) for t in found]


async def export_activities(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    return [row_values(a) for a in await _rows(session, Activity, Activity.lead_id.in_(ids), Activity.occurred_at)]


async def export_consents(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    return [row_values(c) for c in await _rows(session, Consent, Consent.lead_id.in_(ids), Consent.occurred_at)]


async def export_inbound_emails(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    found = await _rows(session, InboundEmail, InboundEmail.lead_id.in_(ids), InboundEmail.received_at)
    return [row_values(m) for m in found]


async def export_memberships(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    memberships = (
        await session.execute(
            select(SegmentMember, Segment.name)
            .join(Segment, Segment.id == SegmentMember.segment_id)
            .where(SegmentMember.lead_id.in_(ids))
            .order_by(SegmentMember.entered_at, SegmentMember.segment_id)
        )
    ).all()
    return [{"segment_id": m.segment_id, "name": name, "entered_at": m.entered_at} for m, name in memberships]


async def export_aliases(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    found = await session.scalars(
        select(LeadAlias).where(LeadAlias.lead_id == ids[0]).order_by(LeadAlias.created_at, LeadAlias.value)
    )
    return [{"kind": a.kind, "value": a.value, "merged_id": a.merged_id, "merged_at": a.created_at} for a in found]


def _profile(lead: Lead) -> dict[str, Any]:
    out = row_values(lead)
    # Hashes are our safeguard, not data about the person; and they are not reversible anyway.
    out.pop("erased_email_hash", None)
    out.pop("erased_phone_hash", None)
    out["tags"] = [t.tag for t in lead.tags]
    return out
