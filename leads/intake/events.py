"""Behaviour events (page views, downloads, custom): anonymous until the visitor is known,
then part of the lead's timeline with a `lead.activity` event for scoring.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database, lock_keys
from core.emails import normalize_email
from core.errors import Conflict, Forbidden, Invalid, NurtureError
from core.groupcommit import GroupCommit
from core.outbox import emit, emit_many
from leads.intake.interaction import Origin, activity_event, activity_row, touchpoint_row
from leads.intake.submissions import VISITOR_ID
from leads.models import Activity, Channel, Lead, Touchpoint, Visitor, activities_t, touchpoints_t
from leads.privacy import find_erased
from leads.service import MAX_MERGE_HOPS, find_lead, get_lead, record_intake

EVENT_TYPE = r"^[a-z][a-z0-9_.:-]{0,49}$"
# What a browser may report without an API key: the tracker's page views and downloads, and a
# site's own events under `custom.`. Anything else could forge a timeline entry of a known lead.
PUBLIC_TYPES = frozenset({"page_view", "download"})
PUBLIC_PREFIX = "custom."
# Activity types written by intake, the API, email and sales: not even a server with a key may
# forge them.
RESERVED_PREFIXES = (
    "form_", "call_", "email_", "sms_", "deal_", "api_", "import", "optin", "unsubscri", "score", "consent_",
)
RESERVED_TYPES = frozenset({"note", "merged", "erased"})
MAX_PROPERTIES_BYTES = 8 * 1024


class EventIn(BaseModel):
    """POST /v1/events."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern=EVENT_TYPE)
    visitor_id: str | None = Field(default=None, pattern=VISITOR_ID.pattern)
    lead_id: uuid.UUID | None = None
    email: str | None = Field(default=None, max_length=320)
    url: str | None = Field(default=None, max_length=2000)
    referrer: str | None = Field(default=None, max_length=2000)
    title: str | None = Field(default=None, max_length=500)
    utm_source: str | None = Field(default=None, max_length=200)
    utm_medium: str | None = Field(default=None, max_length=200)
    utm_campaign: str | None = Field(default=None, max_length=200)
    utm_content: str | None = Field(default=None, max_length=500)
    utm_term: str | None = Field(default=None, max_length=500)
    properties: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime | None = None

    @field_validator("properties")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, ensure_ascii=False, default=str)) > MAX_PROPERTIES_BYTES:
            raise ValueError(f"must be at most {MAX_PROPERTIES_BYTES} bytes as JSON")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        try:
            return None if value is None else clock.as_utc(value)
        except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC value; pydantic reports only ValueError
            raise ValueError("is out of range") from None


async def record_event(
    session: AsyncSession, event: EventIn, ip: str | None, trusted: bool, secrets: list[str]
) -> Activity | None:
    """Store one event. Never commits.

    Public callers (the tracker) identify the browser by visitor id and send page views,
    downloads and `custom.*` events; naming a lead (`lead_id`, `email`), choosing the time or
    other event types need an API key (`trusted`). nurture's own activity types are refused to
    both. An email that belonged to an erased person is refused (Conflict), as in the API.
    Returns None when the event is dropped (a visitor whose lead was erased).
    """
    _allowed(event, trusted)
    occurred_at, origin, data = _checked(event, ip, trusted)

    if event.email and not event.lead_id:
        email = normalize_email(event.email)
        if await find_lead(session, email=email) is None:
            if await find_erased(session, email, None, secrets) is not None:
                raise Conflict("this person asked to be erased; an event does not bring them back", field="email")
            # A server-side event about someone new (a webinar attendee): they become a lead.
            result = await record_intake(session, {"email": email}, origin, event.type, activity_data=data)
            return result.activity
    lead = await _lead_for(session, event)
    if lead is not None and lead.erased_at is not None:
        return None

    touchpoints: list[dict[str, Any]] = []
    row = _row(event, lead.id if lead else None, origin, occurred_at, data, touchpoints)
    activity = Activity(**row)
    session.add_all([*(Touchpoint(**t) for t in touchpoints), activity])
    await session.flush()
    if lead is not None:
        await emit(session, activity_event(row))
    return activity


def _allowed(event: EventIn, trusted: bool) -> None:
    """What a caller may send: never nurture's own types; without a key, no lead named and only
    the public types."""
    _not_reserved(event)
    if not trusted:
        if event.lead_id or event.email:
            field = "lead_id" if event.lead_id else "email"
            raise Forbidden("naming a lead needs an API key with leads:write", field=field)
        if event.type not in PUBLIC_TYPES and not event.type.startswith(PUBLIC_PREFIX):
            raise Invalid(
                f"without an API key the type must be page_view, download or {PUBLIC_PREFIX}<name>", field="type"
            )


def _not_reserved(event: EventIn) -> None:
    if event.type.startswith(RESERVED_PREFIXES) or event.type in RESERVED_TYPES:
        raise Invalid(f"'{event.type}' is reserved for nurture's own activities", field="type")


def _checked(event: EventIn, ip: str | None, trusted: bool) -> tuple[datetime, Origin, dict[str, Any]]:
    """What every stored event needs: a time not in the future (a caller's own time only when
    trusted), its origin (utm, referrer, page) and its data."""
    now = clock.now()
    occurred_at = (event.occurred_at if trusted else None) or now
    if occurred_at > now + timedelta(minutes=5):
        raise Invalid("must not be in the future", field="occurred_at")
    origin = Origin.from_params(
        Channel.event, event.model_dump(), referrer=event.referrer, landing_page=event.url,
        visitor_id=event.visitor_id, ip=ip, occurred_at=occurred_at,
    )
    data = {
        k: v for k, v in {"url": event.url, "title": event.title, "referrer": event.referrer,
                          "properties": event.properties or None}.items() if v
    }
    return occurred_at, origin, data


async def _lead_for(session: AsyncSession, event: EventIn) -> Lead | None:
    if event.lead_id:
        return await get_lead(session, event.lead_id)
    if event.email:
        return await find_lead(session, email=normalize_email(event.email))
    if not event.visitor_id:
        raise Invalid("a visitor_id (or, with an API key, lead_id or email) is required", field="visitor_id")
    # Same lock as a form post of this visitor, so an event never lands anonymous after the
    # form has stitched the visitor (PostgreSQL; SQLite serialises writers anyway).
    await lock_keys(session, f"lead:{event.visitor_id}")
    visitor = await session.get(Visitor, event.visitor_id)
    if visitor is None:
        return None
    return await get_lead(session, visitor.lead_id)


def _is_arrival(origin: Origin, url: str | None) -> bool:
    """A page view is a touchpoint only when it carries marketing context: utm tags or a link
    from another site. Clicks inside the site would otherwise flood the attribution paths."""
    if origin.source or origin.medium or origin.campaign:
        return True
    if not origin.referrer:
        return False
    try:
        ref_host = urlsplit(origin.referrer).hostname
        page_host = urlsplit(url or "").hostname
    except ValueError:
        return False
    return bool(ref_host) and ref_host != page_host


MAX_BATCH = 500


class EventBatchIn(BaseModel):
    """POST /v1/events/batch: a server's events, all or none."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


@dataclass
class PostedEvent:
    """One event as posted: who sent it (`trusted`: with an API key) and from where."""

    event: EventIn
    ip: str | None
    trusted: bool
    secrets: list[str]


async def record_events(session: AsyncSession, events: list[EventIn], ip: str | None, secrets: list[str]) -> int:
    """Store a server's batch of events (trusted) in the caller's transaction, as `record_event`
    would one by one. An error names the event: `events.<i>.<field>`. Returns how many were
    stored. Never commits."""
    return sum(await record_posted(session, [PostedEvent(e, ip, True, secrets) for e in events]))


async def record_posted(session: AsyncSession, posted: list[PostedEvent], locked: bool = False) -> list[bool]:
    """Store events as `record_event` would one by one, in the caller's transaction: events for a
    lead id (a server's) and a tracker's events for a visitor id are written together (a few
    statements for the batch); an email or a merged or unknown lead id one by one. Returns, in
    order, whether each was stored (an erased person's are dropped). An error names the event:
    `events.<i>.<field>`. The visitors' locks are taken here unless the caller holds them
    (`locked`, the writer takes them with its BEGIN)."""
    direct = {p.event.lead_id for p in posted if p.event.lead_id and p.trusted}
    if not locked:  # all at once in sorted order: two batches never deadlock
        await lock_keys(session, *visitor_locks(posted))
    known = {
        row.id: row for row in await session.execute(
            select(Lead.id, Lead.erased_at).where(Lead.id.in_(direct), Lead.merged_into_id.is_(None))
        )
    } if direct else {}
    owners = await _owners(session, sorted({p.event.visitor_id or "" for p in posted if _by_visitor(p)}))
    activities: list[dict[str, Any]] = []
    touchpoints: list[dict[str, Any]] = []
    stored = []
    for index, post in enumerate(posted):
        event = post.event
        try:
            if _by_visitor(post):
                owner = owners.get(event.visitor_id or "")
            elif (owner := known.get(event.lead_id) if event.lead_id and post.trusted else None) is None:
                # an email, a merged or unknown lead, a lead named without a key: the one-by-one path
                stored.append(await record_event(session, event, post.ip, post.trusted, post.secrets) is not None)
                continue
            _allowed(event, post.trusted)  # as record_event checks first, whoever the event turns out to be for
            stored.append(owner is None or owner.erased_at is None)
            if stored[-1]:
                occurred_at, origin, data = _checked(event, post.ip, post.trusted)
                activities.append(_row(event, owner.id if owner else None, origin, occurred_at, data, touchpoints))
        except NurtureError as exc:
            exc.field = f"events.{index}.{exc.field}" if exc.field else f"events.{index}"
            raise
    if touchpoints:
        await session.execute(insert(touchpoints_t), touchpoints)
    if activities:
        await session.execute(insert(activities_t), activities)
        await emit_many(session, [activity_event(row) for row in activities if row["lead_id"]])
    return stored


def visitor_locks(posted: list[PostedEvent]) -> list[str]:
    """The lock keys of the visitors the events may be stitched to (as a form post of the visitor
    takes them), so an event never lands anonymous after a form has made the visitor known."""
    return [f"lead:{v}" for v in sorted({p.event.visitor_id for p in posted if p.event.visitor_id})]


def _by_visitor(post: PostedEvent) -> bool:
    """A tracker's event: it names its browser, not a lead."""
    return bool(post.event.visitor_id) and not post.event.lead_id and not post.event.email


async def _owners(session: AsyncSession, visitor_ids: list[str]) -> dict[str, Any]:
    """The lead each known visitor belongs to (followed through merges as `get_lead` follows
    them), with its id and erased_at; unknown visitors are absent."""
    if not visitor_ids:
        return {}
    owner_of: dict[str, uuid.UUID] = {
        row.visitor_id: row.lead_id for row in await session.execute(
            select(Visitor.visitor_id, Visitor.lead_id).where(Visitor.visitor_id.in_(visitor_ids))
        )
    }
    leads: dict[uuid.UUID, Any] = {}
    wanted = set(owner_of.values())
    for _ in range(MAX_MERGE_HOPS + 1):
        if not (wanted := wanted - leads.keys()):
            break
        for row in await session.execute(
            select(Lead.id, Lead.merged_into_id, Lead.erased_at).where(Lead.id.in_(wanted))
        ):
            leads[row.id] = row
        wanted = {row.merged_into_id for row in leads.values() if row.merged_into_id}
    owners = {}
    for visitor_id, lead_id in owner_of.items():
        lead, hops = leads[lead_id], 0
        while lead.merged_into_id is not None and hops < MAX_MERGE_HOPS:
            lead, hops = leads[lead.merged_into_id], hops + 1
        owners[visitor_id] = lead
    return owners


def _row(
    event: EventIn, lead_id: uuid.UUID | None, origin: Origin, occurred_at: datetime, data: dict[str, Any],
    touchpoints: list[dict[str, Any]],
) -> dict[str, Any]:
    """The activity row (and touchpoint row, for an arrival) an event writes for a known lead or,
    with no lead, for an anonymous visitor (the caller has checked it is `_allowed`)."""
    touchpoint_id = None
    if _is_arrival(origin, event.url):
        touchpoints.append(touchpoint_row(lead_id, origin, occurred_at))
        touchpoint_id = touchpoints[-1]["id"]
    return activity_row(lead_id, event.visitor_id, event.type, touchpoint_id, data, occurred_at)


class EventWriter(GroupCommit[PostedEvent, bool]):
    """POST /v1/events in groups: each request hears 202 once its event is committed, and the
    events that arrive meanwhile share the next transaction (core.groupcommit)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, Channel.event.value, _record_locked, _record_one, max_batch=MAX_BATCH,
                         locks=visitor_locks)


async def _record_locked(session: AsyncSession, posted: list[PostedEvent]) -> list[bool]:
    return await record_posted(session, posted, locked=True)


async def _record_one(session: AsyncSession, post: PostedEvent) -> bool:
    return await record_event(session, post.event, post.ip, post.trusted, post.secrets) is not None


def event_writer(state: Any) -> EventWriter:
    """The process's event writer (one per application)."""
    if getattr(state, "event_writer", None) is None:
        state.event_writer = EventWriter(state.db)
    return state.event_writer  # type: ignore[no-any-return]
