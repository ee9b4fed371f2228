"""Behaviour events (page views, downloads, custom): anonymous until the visitor is known,
then part of the lead's timeline with a `lead.activity` event for scoring.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import lock_keys
from core.errors import Conflict, Forbidden, Invalid, NurtureError
from core.ids import new_id
from core.outbox import emit, emit_many
from leads.intake.submissions import VISITOR_ID
from leads.models import Activity, Channel, Lead, Touchpoint, Visitor, activities_t, touchpoints_t
from leads.privacy import find_erased
from leads.schemas import normalize_email
from leads.service import Origin, find_lead, get_lead, record_intake

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
    _not_reserved(event)
    if not trusted:
        if event.lead_id or event.email:
            field = "lead_id" if event.lead_id else "email"
            raise Forbidden("naming a lead needs an API key with leads:write", field=field)
        if event.type not in PUBLIC_TYPES and not event.type.startswith(PUBLIC_PREFIX):
            raise Invalid(
                f"without an API key the type must be page_view, download or {PUBLIC_PREFIX}<name>", field="type"
            )
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

    touchpoint = None
    if _is_arrival(origin, event.url):
        touchpoint = Touchpoint(
            lead_id=lead.id if lead else None, visitor_id=event.visitor_id, channel=Channel.event,
            source=origin.source, medium=origin.medium, campaign=origin.campaign, content=origin.content,
            term=origin.term, referrer=origin.referrer, landing_page=origin.landing_page, occurred_at=occurred_at,
        )
        session.add(touchpoint)
        await session.flush()
    activity = Activity(
        lead_id=lead.id if lead else None, visitor_id=event.visitor_id, type=event.type,
        touchpoint_id=touchpoint.id if touchpoint else None, data=data, occurred_at=occurred_at,
    )
    session.add(activity)
    await session.flush()
    if lead is not None:
        await emit(
            session, "lead.activity",
            {"lead_id": lead.id, "activity_id": activity.id, "type": event.type, "occurred_at": occurred_at},
        )
    return activity


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


async def record_events(session: AsyncSession, events: list[EventIn], ip: str | None, secrets: list[str]) -> int:
    """Store a server's batch of events (trusted) in the caller's transaction, as `record_event`
    would one by one; events for a lead id are written together (a few statements for the batch),
    the rest (email, visitor id, a merged lead) one by one. An error names the event:
    `events.<i>.<field>`. Returns how many were stored. Never commits."""
    direct = {e.lead_id for e in events if e.lead_id}
    known = {
        row.id: row for row in await session.execute(
            select(Lead.id, Lead.erased_at).where(Lead.id.in_(direct), Lead.merged_into_id.is_(None))
        )
    } if direct else {}
    activities: list[dict[str, Any]] = []
    touchpoints: list[dict[str, Any]] = []
    stored = 0
    for index, event in enumerate(events):
        try:
            lead = known.get(event.lead_id) if event.lead_id else None
            if lead is None:  # email, visitor id, a merged or unknown lead: the one-by-one path
                stored += await record_event(session, event, ip, True, secrets) is not None
                continue
            if lead.erased_at is not None:
                continue
            activities.append(_row(event, lead.id, ip, touchpoints))
            stored += 1
        except NurtureError as exc:
            exc.field = f"events.{index}.{exc.field}" if exc.field else f"events.{index}"
            raise
    if touchpoints:
        await session.execute(insert(touchpoints_t), touchpoints)
    if activities:
        await session.execute(insert(activities_t), activities)
        await emit_many(session, "lead.activity", [{
            "lead_id": row["lead_id"], "activity_id": row["id"], "type": row["type"], "occurred_at": row["occurred_at"],
        } for row in activities])
    return stored


def _row(event: EventIn, lead_id: uuid.UUID, ip: str | None, touchpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """The activity row (and touchpoint row, for an arrival) `record_event` writes for a known lead."""
    _not_reserved(event)
    occurred_at, origin, data = _checked(event, ip, trusted=True)
    touchpoint_id = None
    if _is_arrival(origin, event.url):
        touchpoint_id = new_id()
        touchpoints.append({
            "id": touchpoint_id, "lead_id": lead_id, "visitor_id": event.visitor_id, "channel": Channel.event.value,
            "source": origin.source, "medium": origin.medium, "campaign": origin.campaign, "content": origin.content,
            "term": origin.term, "referrer": origin.referrer, "landing_page": origin.landing_page,
            "occurred_at": occurred_at,
        })
    return {"id": new_id(), "lead_id": lead_id, "visitor_id": event.visitor_id, "type": event.type,
            "touchpoint_id": touchpoint_id, "data": data, "occurred_at": occurred_at}
