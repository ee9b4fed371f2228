"""Identity and intake: every channel lands here to find-or-create one lead and record where
it came from, in the caller's transaction (lead + touchpoint + activity + consent + outbox event).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, literal, or_, select, union, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import lock_keys
from core.errors import Invalid, NotFound
from core.ids import new_id
from core.metrics import LEADS_CREATED
from core.outbox import emit
from core.text import check_text, scrub
from leads.events import ConsentWithdrawn, LeadUpdated
from leads.fields import validate_custom
from leads.intake.interaction import Origin, activity_event, activity_row, lead_changes, lead_post
from leads.models import Activity, Consent, Lead, LeadAlias, LeadTag, Touchpoint, Visitor
from leads.schemas import ConsentIn


@dataclass
class IntakeResult:
    lead: Lead
    created: bool
    touchpoint: Touchpoint
    activity: Activity


async def find_lead(
    session: AsyncSession,
    email: str | None = None,
    phone: str | None = None,
    visitor_id: str | None = None,
) -> Lead | None:
    """The lead this person already is: by email, else by phone, else by visitor id.

    An email or phone of a lead merged away (see LeadAlias) finds the lead it was merged into,
    after the leads that hold that value now. A phone or visitor match whose lead has a different
    email is another person (a shared office phone, a shared computer), so it does not match.
    """
    # A UNION of indexed look-ups (an OR across them would scan the whole table).
    matches: list[Select[Any]] = []
    if email:
        matches += [select(Lead.id).where(Lead.email == email), _alias_of("email", email)]
    if phone:
        matches += [select(Lead.id).where(Lead.phone == phone), _alias_of("phone", phone)]
    if visitor_id:
        matches.append(select(Visitor.lead_id).where(Visitor.visitor_id == visitor_id))
    if not matches:
        return None
    # One round trip for every identity; the order of preference is applied here.
    rows = (
        await session.execute(
            select(
                Lead,
                (had_identity("email", email) if email else literal(False)).label("had_email"),
                (had_identity("phone", phone) if phone else literal(False)).label("had_phone"),
            )
            .where(Lead.id.in_(union(*matches)), Lead.merged_into_id.is_(None), Lead.erased_at.is_(None))
            .order_by(Lead.created_at, Lead.id)
            .limit(50)
        )
    ).all()
    candidates = [(lead, bool(had_email), bool(had_phone)) for lead, had_email, had_phone in rows]
    if email:
        for lead, _, _ in candidates:
            if lead.email == email:
                return lead
        for lead, had_email, _ in candidates:
            if had_email:
                return lead
    compatible = [(lead, had_phone) for lead, _, had_phone in candidates if not email or lead.email in (None, email)]
    if phone:
        for lead, _ in compatible:
            if lead.phone == phone:
                return lead
        for lead, had_phone in compatible:
            if had_phone:
                return lead
    if visitor_id and compatible:
        return compatible[0][0]  # what is left matched by visitor id
    return None


def _alias_of(kind: str, value: str) -> Select[Any]:
    return select(LeadAlias.lead_id).where(LeadAlias.kind == kind, LeadAlias.value == value)


def had_identity(kind: str, value: str) -> ColumnElement[bool]:
    """Condition: a lead with this email or phone was merged into this one (see LeadAlias)."""
    return Lead.id.in_(_alias_of(kind, value))


async def _old_identities(session: AsyncSession, lead: Lead, profile: dict[str, Any]) -> set[str]:
    """The profile's email/phone keys whose values are `lead`'s merged-away ones, not its current."""
    differing = {
        k: profile[k] for k in ("email", "phone") if profile.get(k) and getattr(lead, k) not in (None, profile[k])
    }
    if not differing:
        return set()
    found = await session.execute(
        select(LeadAlias.kind, LeadAlias.value).where(
            LeadAlias.lead_id == lead.id,
            or_(*(and_(LeadAlias.kind == k, LeadAlias.value == v) for k, v in differing.items())),
        )
    )
    return {kind for kind, _ in found}


MAX_MERGE_HOPS = 20  # a merge chain is followed at most this far


async def get_lead(session: AsyncSession, lead_id: uuid.UUID, follow_merges: bool = True) -> Lead:
    lead = await session.get(Lead, lead_id)
    seen = 0
    while lead is not None and follow_merges and lead.merged_into_id is not None and seen < MAX_MERGE_HOPS:
        lead = await session.get(Lead, lead.merged_into_id)
        seen += 1
    if lead is None:
        raise NotFound(f"no lead {lead_id}", field="lead_id")
    return lead


async def record_intake(
    session: AsyncSession,
    profile: dict[str, Any],
    origin: Origin,
    activity_type: str,
    activity_data: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    consents: list[ConsentIn] | None = None,
    owner_id: uuid.UUID | None = None,
    overwrite: bool = True,
) -> IntakeResult:
    """Find or create the lead for `profile` and record the interaction. Never commits.

    `profile` holds already-cleaned values (see `schemas.clean_profile`). With `overwrite`, sent
    values replace stored ones (a newer form wins); otherwise they only fill empty fields.
    """
    email, phone = profile.get("email"), profile.get("phone")
    # Every channel passes through here: refuse text the database cannot store (NUL, lone
    # surrogates) with the field named, rather than failing at commit.
    check_text(tags or [], "tags")
    check_text(custom or {}, "custom")
    check_text([c.model_dump() for c in consents or []], "consent")
    check_text(activity_data or {}, "data")
    custom = await validate_custom(session, custom or {})
    if owner_id is not None:
        await check_owner(session, owner_id)
    origin = _scrubbed(origin)
    await lock_keys(session, *(f"lead:{k}" for k in (email, phone, origin.visitor_id) if k))
    occurred_at = origin.occurred_at or clock.now()

    lead = await find_lead(session, email, phone, origin.visitor_id)
    created = lead is None
    if lead is None:
        lead = Lead(
            id=new_id(), source_channel=origin.channel, custom={}, created_at=occurred_at, updated_at=occurred_at
        )
        lead.tags = []
        session.add(lead)
    else:
        # Writing from an address it had before a merge: the current one stays the lead's address.
        for key in await _old_identities(session, lead, profile):
            profile = {k: v for k, v in profile.items() if k != key}
    changes = lead_changes(
        {k: getattr(lead, k) for k in profile}, lead.custom or {}, {t.tag for t in lead.tags} if tags else (),
        profile, custom, tags or [], overwrite,
    )
    for key, value in changes.values.items():
        setattr(lead, key, value)
    if changes.custom is not None:
        lead.custom = changes.custom
    if changes.tags:
        lead.tags.extend(LeadTag(tag=tag) for tag in changes.tags)
    changed = changes.changed
    if owner_id is not None and owner_id != lead.owner_id:
        lead.owner_id = owner_id
        changed.append("owner_id")
    lead.updated_at = clock.now()

    post = lead_post(lead.id, created, changed, origin, activity_type, activity_data or {}, occurred_at, consents or [])
    # Ids are made with the rows, so the whole interaction is written in one flush.
    touchpoint, activity = Touchpoint(**post.touchpoint), Activity(**post.activity)
    session.add_all([touchpoint, activity, *(Consent(**row) for row in post.consents)])
    if origin.visitor_id:
        await stitch_visitor(session, origin.visitor_id, lead.id)
    await session.flush()
    for event in post.events:
        await emit(session, event)
    if created:
        LEADS_CREATED.labels(origin.channel).inc()
    return IntakeResult(lead=lead, created=created, touchpoint=touchpoint, activity=activity)


ORIGIN_TEXT = ("source", "medium", "campaign", "content", "term", "referrer", "landing_page", "visitor_id")


def _scrubbed(origin: Origin) -> Origin:
    """Where-from text is kept as found, minus what the database cannot store (NUL, lone
    surrogates): the last line of defence, whichever channel forgot to scrub it."""
    changes: dict[str, Any] = {
        k: scrub(v) for k in ORIGIN_TEXT if isinstance(v := getattr(origin, k), str) and scrub(v) != v
    }
    return replace(origin, **changes) if changes else origin


async def check_owner(session: AsyncSession, owner_id: uuid.UUID) -> None:
    """Invalid naming owner_id unless it is a user's id (the foreign key would fail at flush)."""
    from core.auth import User

    if await session.get(User, owner_id) is None:
        raise Invalid(f"no user {owner_id}", field="owner_id")


async def stitch_visitor(session: AsyncSession, visitor_id: str, lead_id: uuid.UUID) -> None:
    """Tie a visitor id to a lead and claim the anonymous page views it made before."""
    known = await session.get(Visitor, visitor_id)
    if known is None:
        session.add(Visitor(visitor_id=visitor_id, lead_id=lead_id, first_seen_at=clock.now()))
    elif known.lead_id != lead_id:
        # The browser now belongs to someone else (a shared computer): newer identity wins.
        known.lead_id = lead_id
    else:
        return  # already stitched: later events of this visitor carry the lead id themselves
    await session.flush()  # the lead must exist before rows point at it
    for table in (Touchpoint, Activity):
        await session.execute(
            update(table)
            .where(table.visitor_id == visitor_id, table.lead_id.is_(None))
            .values(lead_id=lead_id)
        )


# Changes made through the API (PATCH, notes, consents) -----------------------------------------


async def update_lead(
    session: AsyncSession, lead: Lead, changes: dict[str, Any], region: str | None
) -> list[str]:
    """Apply a partial update; returns the names of the fields that changed. Never commits.

    `changes` holds only what the client sent: profile fields, `custom` (a None value removes
    the key), `tags` (replace) or `tags_add`/`tags_remove`, `owner_id`.
    """
    from core.errors import Conflict
    from leads.schemas import PROFILE_FIELDS, clean_profile

    if lead.erased_at is not None:
        raise Conflict("this lead was erased; its data cannot change", field="lead_id")
    changed: list[str] = []
    profile = clean_profile({k: v for k, v in changes.items() if k in PROFILE_FIELDS}, region)
    if "customer_status" in profile and profile["customer_status"] is None:
        raise Invalid("must be one of new, current, former", field="customer_status")
    new_email = profile.get("email")
    if new_email and new_email != lead.email:
        await lock_keys(session, f"lead:{new_email}")
        taken = await session.scalar(select(Lead.id).where(Lead.email == new_email, Lead.id != lead.id))
        if taken is not None:
            raise Conflict(f"another lead ({taken}) has the email {new_email}", field="email")
        # An address merged into another lead still finds that lead; giving it to this one would
        # split the person's mail between two leads.
        had = await session.scalar(
            select(LeadAlias.lead_id).where(
                LeadAlias.kind == "email", LeadAlias.value == new_email, LeadAlias.lead_id != lead.id
            ).limit(1)
        )
        if had is not None:
            raise Conflict(f"the email {new_email} was merged into lead {had}", field="email")
    for key, value in profile.items():
        if getattr(lead, key) != value:
            setattr(lead, key, value)
            changed.append(key)

    if "owner_id" in changes and changes["owner_id"] != lead.owner_id:
        owner = changes["owner_id"]
        if owner is not None:
            await check_owner(session, owner)
        lead.owner_id = owner
        changed.append("owner_id")

    if changes.get("custom"):
        values = await validate_custom(session, changes["custom"])
        merged = dict(lead.custom or {})
        for key, value in values.items():
            if merged.get(key) != value:
                changed.append(f"custom.{key}")
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        lead.custom = merged

    if changes.get("tags") is not None and (changes.get("tags_add") or changes.get("tags_remove")):
        raise Invalid("send either tags (to replace) or tags_add/tags_remove", field="tags")
    have = [t.tag for t in lead.tags]
    wanted = list(have)
    if changes.get("tags") is not None:
        wanted = list(dict.fromkeys(changes["tags"]))
    for tag in changes.get("tags_add") or []:
        if tag not in wanted:
            wanted.append(tag)
    removing = set(changes.get("tags_remove") or [])
    wanted = [t for t in wanted if t not in removing]
    if set(wanted) != set(have):
        lead.tags = [t for t in lead.tags if t.tag in wanted] + [
            LeadTag(tag=t) for t in wanted if t not in have
        ]
        changed.append("tags")

    if changed:
        lead.updated_at = clock.now()
        await session.flush()
        await emit(session, LeadUpdated(lead_id=lead.id, changed=changed, channel=None, campaign=None))
    return changed


async def record_consent(
    session: AsyncSession,
    lead: Lead,
    consent: ConsentIn,
    source: str,
    ip: str | None,
) -> Consent:
    """A grant or a withdrawal, on the record and on the timeline; withdrawal is announced so
    campaigns stop at once (sending also re-checks consent)."""
    from core.errors import Conflict

    if lead.erased_at is not None:
        raise Conflict("this lead was erased", field="lead_id")
    now = clock.now()
    row = Consent(
        lead_id=lead.id, purpose=consent.purpose, granted=consent.granted, source=source,
        wording=consent.wording, ip=ip, occurred_at=now,
    )
    session.add(row)
    kind = "consent_granted" if consent.granted else "consent_withdrawn"
    session.add(Activity(lead_id=lead.id, type=kind, data={"purpose": consent.purpose}, occurred_at=now))
    await session.flush()
    if not consent.granted:
        await emit(session, ConsentWithdrawn(lead_id=lead.id, purpose=consent.purpose))
    return row


async def add_note(session: AsyncSession, lead: Lead, text: str, author: str | None) -> Activity:
    """A note from a marketer or a rep, on the lead's timeline."""
    from core.errors import Conflict

    if lead.erased_at is not None:
        raise Conflict("this lead was erased", field="lead_id")
    return await record_activity(session, lead.id, "note", {"text": text, "author": author})


async def record_activity(session: AsyncSession, lead_id: uuid.UUID, kind: str, data: dict[str, Any],
                          occurred_at: datetime | None = None) -> Activity:
    """One entry on the lead's timeline, announced as `lead.activity` (scoring, segments). Never commits."""
    row = activity_row(lead_id, None, kind, None, data, occurred_at or clock.now())
    activity = Activity(**row)
    session.add(activity)
    await session.flush()
    await emit(session, activity_event(row))
    return activity
