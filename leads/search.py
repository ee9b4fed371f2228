"""The lead list: filters from query parameters, compiled to one query, paged by (created_at, id)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.emails import normalize_email
from core.errors import Invalid
from core.paging import Page, keyset_page, parse_limit
from core.phones import normalize_phone
from core.text import check_text
from leads.fields import coerce, definitions
from leads.models import Channel, CustomerStatus, CustomFieldType, Lead, LeadTag, Segment, Touchpoint
from leads.query import CustomValue, folded_contains, prepare_folding
from leads.service import had_identity

LIST_PARAMS = {
    "email", "phone", "q", "tag", "country", "customer_status", "source_channel", "campaign",
    "created_from", "created_to", "segment", "cursor", "limit",
}


@dataclass
class LeadFilter:
    """What GET /v1/leads was asked for, already validated."""

    email: str | None = None
    phone: str | None = None
    q: str | None = None
    tags: list[str] = field(default_factory=list)
    country: str | None = None
    customer_status: str | None = None
    source_channel: str | None = None
    campaign: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    segment_id: uuid.UUID | None = None
    cursor: str | None = None
    limit: int = 50


def live_leads() -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Merged and erased leads are history, not people to list or target."""
    return Lead.merged_into_id.is_(None), Lead.erased_at.is_(None)


def parse_datetime(value: str, field: str, end_of_day: bool = False) -> datetime:
    """ISO date or datetime; a bare date `to` covers that whole day (UTC)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else start
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # Converted now: 0001-01-01T00:00+01:00 has no UTC value and would fail in the query.
        return clock.as_utc(parsed) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise Invalid("must be a date (YYYY-MM-DD) or an ISO 8601 time", field=field) from None


async def parse_filter(
    session: AsyncSession, params: list[tuple[str, str]], default_region: str | None
) -> LeadFilter:
    """Query parameters (repeats allowed for `tag`) → LeadFilter; a bad value names its parameter."""
    out = LeadFilter()
    defs = None
    for name, value in params:
        check_text(value, name)
        if name not in LIST_PARAMS and not name.startswith("custom."):
            raise Invalid(f"unknown filter '{name}'", field=name)
        if value == "" and name != "q":
            raise Invalid("must not be empty", field=name)
        if name == "email":
            out.email = normalize_email(value)
        elif name == "phone":
            out.phone = normalize_phone(value, default_region)
        elif name == "q":
            out.q = " ".join(value.split())[:200] or None
        elif name == "tag":
            out.tags.append(value.strip())
        elif name == "country":
            if len(value) != 2 or not value.isascii() or not value.isalpha():
                raise Invalid("must be a two-letter ISO 3166 country code", field=name)
            out.country = value.upper()
        elif name == "customer_status":
            if value not in CustomerStatus.__members__:
                raise Invalid(f"must be one of {', '.join(CustomerStatus)}", field=name)
            out.customer_status = value
        elif name == "source_channel":
            if value not in {c.value for c in Channel}:
                raise Invalid(f"must be one of {', '.join(c.value for c in Channel)}", field=name)
            out.source_channel = value
        elif name == "campaign":
            out.campaign = value
        elif name == "created_from":
            out.created_from = parse_datetime(value, name)
        elif name == "created_to":
            out.created_to = parse_datetime(value, name, end_of_day=True)
        elif name == "segment":
            try:
                out.segment_id = uuid.UUID(value)
            except ValueError:
                raise Invalid("must be a segment id", field=name) from None
        elif name == "cursor":
            out.cursor = value
        elif name == "limit":
            out.limit = parse_limit(value)
        else:
            key = name.removeprefix("custom.")
            defs = defs if defs is not None else await definitions(session)
            spec = defs.get(key)
            if spec is None:
                raise Invalid(f"no custom field '{key}' is defined", field=name)
            out.custom[key] = coerce(spec, value)
    return out


async def lead_query(session: AsyncSession, wanted: LeadFilter) -> Select[Any]:
    """SELECT of live leads matching `wanted` (no order, no paging)."""
    from leads.segments import segment_condition

    stmt = select(Lead).where(*live_leads())
    # An email or phone merged away finds the lead it was merged into, as intake does.
    if wanted.email:
        stmt = stmt.where(or_(Lead.email == wanted.email, had_identity("email", wanted.email)))
    if wanted.phone:
        stmt = stmt.where(or_(Lead.phone == wanted.phone, had_identity("phone", wanted.phone)))
    if wanted.q:
        await prepare_folding(session)
        terms = [
            or_(
                folded_contains(session, Lead.first_name, word),
                folded_contains(session, Lead.last_name, word),
                folded_contains(session, Lead.email, word),
                folded_contains(session, Lead.company, word),
            )
            for word in wanted.q.split()
        ]
        # Every word must match somewhere, so "Иван Ромашка" finds Ivan at Romashka.
        stmt = stmt.where(*terms)
    for tag in wanted.tags:
        stmt = stmt.where(exists().where(LeadTag.lead_id == Lead.id, LeadTag.tag == tag))
    if wanted.country:
        stmt = stmt.where(Lead.country == wanted.country)
    if wanted.customer_status:
        stmt = stmt.where(Lead.customer_status == wanted.customer_status)
    if wanted.source_channel:
        stmt = stmt.where(Lead.source_channel == wanted.source_channel)
    if wanted.campaign:
        stmt = stmt.where(
            exists().where(Touchpoint.lead_id == Lead.id, Touchpoint.campaign == wanted.campaign)
        )
    if wanted.created_from:
        stmt = stmt.where(Lead.created_at >= wanted.created_from)
    if wanted.created_to:
        stmt = stmt.where(Lead.created_at <= wanted.created_to)
    if wanted.custom:
        defs = await definitions(session)
        for key, value in wanted.custom.items():
            stmt = stmt.where(_custom_equals(session, key, defs[key].type, value))
    if wanted.segment_id:
        segment = await session.get(Segment, wanted.segment_id)
        if segment is None:
            raise Invalid(f"no segment {wanted.segment_id}", field="segment")
        stmt = stmt.where(await segment_condition(session, segment.filter))
    return stmt


def _custom_equals(session: AsyncSession, key: str, kind: str, value: Any) -> ColumnElement[bool]:
    access = CustomValue(session, key)
    if value is None:
        return access.is_empty()
    if kind in (CustomFieldType.number, CustomFieldType.integer):
        return access.number() == value
    if kind == CustomFieldType.boolean:
        return access.boolean() == value
    return access.text() == str(value)


async def list_leads(session: AsyncSession, wanted: LeadFilter) -> Page:
    stmt = await lead_query(session, wanted)
    return await keyset_page(session, stmt, Lead.created_at, Lead.id, wanted.cursor, wanted.limit)
