"""The channels' parts of a person's data (declared in channels.domain): their messages and the
mail captured for them, their bounces and suppressions. Erased, a message keeps its states (for
counts) but not its address or content; captured copies go; suppressions and bounce records keep
only the address's keyed hash, so the address is still never mailed again. Never commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from channels.gate import address_hash
from channels.models import (
    Bounce,
    CapturedMail,
    Message,
    Suppression,
    bounces_t,
    captured_t,
    messages_t,
    suppressions_t,
)
from core.domains import LeadIds, row_values
from core.settings import Settings


def _secret(settings: Settings) -> str:
    return settings.derived_secret("suppressions")


async def export_messages(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    found = await session.scalars(
        select(Message).where(Message.lead_id.in_(ids)).order_by(Message.created_at, Message.id)
    )
    return [row_values(m) for m in found]


async def erase_messages(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    await session.execute(update(messages_t).where(messages_t.c.lead_id.in_(ids)).values(
        recipient="erased", payload={}, links=None, response=None,
    ))


def _their_messages(ids: LeadIds) -> Any:
    return select(messages_t.c.id).where(messages_t.c.lead_id.in_(ids)).scalar_subquery()


async def export_captured(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    """The mail the capture server kept for them, the message itself as text."""
    found = await session.scalars(
        select(CapturedMail).where(CapturedMail.message_id.in_(_their_messages(ids)))
        .order_by(CapturedMail.received_at, CapturedMail.id)
    )
    return [row_values(m) | {"raw": m.raw.decode("utf-8", "replace")} for m in found]


async def erase_captured(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    await session.execute(delete(captured_t).where(captured_t.c.message_id.in_(_their_messages(ids))))


async def export_suppressions(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    """As held: once the person is erased, the address is its keyed hash."""
    found = await session.scalars(
        select(Suppression).where(Suppression.lead_id.in_(ids)).order_by(Suppression.created_at, Suppression.id)
    )
    return [row_values(s) for s in found]


async def erase_suppressions(session: AsyncSession, ids: LeadIds, settings: Settings) -> None:
    s = suppressions_t.c
    held = (await session.execute(
        select(s.id, s.channel, s.address, s.topic).where(s.lead_id.in_(ids), s.address.not_like("hash:%"))
    )).all()
    for row in held:
        hashed = address_hash(_secret(settings), row.channel, row.address)
        twin = await session.scalar(select(s.id).where(s.channel == row.channel, s.address == hashed,
                                                       s.topic == row.topic))
        if twin is not None:
            await session.execute(delete(suppressions_t).where(s.id == row.id))  # the hashed twin is kept
        else:
            await session.execute(update(suppressions_t).where(s.id == row.id).values(address=hashed))


async def export_bounces(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    found = await session.scalars(
        select(Bounce).where(Bounce.lead_id.in_(ids)).order_by(Bounce.occurred_at, Bounce.id)
    )
    return [row_values(b) for b in found]


async def erase_bounces(session: AsyncSession, ids: LeadIds, settings: Settings) -> None:
    b = bounces_t.c
    bounced = (await session.execute(
        select(b.id, b.address).where(b.lead_id.in_(ids), b.address.not_like("hash:%"))
    )).all()
    for bounce_id, address in bounced:
        await session.execute(update(bounces_t).where(b.id == bounce_id).values(
            address=address_hash(_secret(settings), "email", address), diagnostic="",
        ))
