"""The suppression list as people keep it: addresses added by hand (one topic or every marketing
message), listed, and lifted (bounces and complaints by an admin only).
Takes an AsyncSession and never commits: the endpoint owns the transaction."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Suppression, suppressions_t
from channels.schemas import SuppressionIn
from core import clock
from core.auth import ApiKey, Scope
from core.db import insert_ignore
from core.emails import normalize_email
from core.errors import Forbidden, Invalid, NotFound
from core.ids import new_id
from core.paging import Page, newest_first
from core.phones import e164
from core.text import check_text, text_filter
from leads.models import Lead

LIFTABLE = ("manual", "unsubscribed")  # suppressions a marketer may lift; the others (bounces, complaints) need admin


def suppressed_address(channel: str, address: str) -> str:
    """The address as the send-time check compares it: emails validated and lower-cased, SMS numbers E.164,
    chat ids and URLs lower-cased."""
    check_text(address, "address")
    if channel == "email":
        return normalize_email(address, "address")
    if channel == "sms":
        return e164(address, "address")
    value = address.strip().lower()
    if not value:
        raise Invalid("must not be empty", field="address")
    return value


async def add_suppression(session: AsyncSession, body: SuppressionIn) -> tuple[Suppression, bool]:
    """Suppress an address (for one topic, or every marketing message); returns the row and whether it is new
    (an address already suppressed for that topic keeps its row and reason)."""
    address = suppressed_address(body.channel, body.address)
    check_text(body.detail, "detail")
    lead_id = None
    if body.channel in ("email", "sms"):
        column = Lead.email if body.channel == "email" else Lead.phone
        lead_id = await session.scalar(select(Lead.id).where(column == address, Lead.merged_into_id.is_(None))
                                       .limit(1))
    s = suppressions_t.c
    made = (await session.execute(insert_ignore(session, suppressions_t).returning(s.id).values(
        id=new_id(), channel=body.channel, address=address, topic=body.topic, reason=body.reason, lead_id=lead_id,
        detail=body.detail, created_at=clock.now(),
    ))).scalar()
    row = await session.scalar(select(Suppression).where(
        Suppression.channel == body.channel, Suppression.address == address, Suppression.topic == body.topic))
    assert row is not None  # inserted now, or the insert was ignored because it exists
    return row, made is not None


async def list_suppressions(session: AsyncSession, channel: str | None, address: str | None, reason: str | None,
                            cursor: str | None, limit: int) -> Page:
    stmt = select(Suppression)
    if channel is not None:
        stmt = stmt.where(Suppression.channel == channel)
    if (wanted := text_filter(address, "address")) is not None:
        stmt = stmt.where(Suppression.address == wanted.lower())
    if reason is not None:
        stmt = stmt.where(Suppression.reason == reason)
    return await newest_first(session, stmt, Suppression, "created_at", cursor, limit)


async def lift_suppression(session: AsyncSession, suppression_id: uuid.UUID, key: ApiKey) -> None:
    """Delete a suppression: manual ones and unsubscribes by a marketer, bounces and complaints by an admin
    only (sending to such an address again harms the sender's reputation)."""
    found = await session.get(Suppression, suppression_id)
    if found is None:
        raise NotFound(f"no suppression {suppression_id}", field="suppression_id")
    if found.reason not in LIFTABLE and Scope.admin.value not in key.scopes:
        raise Forbidden(f"only an admin may lift a '{found.reason}' suppression", field="reason")
    await session.delete(found)
    await session.flush()
