"""What comes back to the email channel: bounces and complaints (read by the classifier from the
stored inbound message) become bounce records, suppressions and lead activities; the double opt-in
request becomes a confirmation mail. Takes an AsyncSession and never commits."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from channels.email.bounces import Recipient, classify
from channels.email.compose import parse_bounce_address
from channels.ledger import Outgoing, queue_message
from channels.models import bounces_t, messages_t, suppressions_t
from channels.tokens import MessageTokens
from core import clock
from core.db import insert_ignore
from core.errors import Forbidden
from core.ids import new_id
from core.settings import Settings
from leads.events import OptinRequested
from leads.models import InboundEmail, Lead, leads_t
from leads.service import record_activity

CIS = {"RU", "BY", "KZ", "KG", "AM", "AZ", "TJ", "UZ", "MD"}  # where the confirmation goes out in Russian


async def returned(session: AsyncSession, inbound_id: uuid.UUID, settings: Settings) -> int:
    """Act on a stored bounce or complaint; returns how many recipients it concerned. Idempotent:
    one bounce record per inbound message and address."""
    inbound = await session.get(InboundEmail, inbound_id, options=[undefer(InboundEmail.raw)])
    if inbound is None or inbound.raw is None:
        return 0
    report = classify(inbound.raw)
    if report.kind not in ("bounce", "complaint"):
        return 0
    tokens = MessageTokens(settings.signing_keys())
    message = await _verp_message(session, inbound, tokens)
    done = 0
    for recipient in report.recipients:
        if report.kind == "bounce" and not _failed(recipient):
            continue  # a delay or a success notice: nothing to act on
        address = recipient.recipient or (message.recipient if message is not None else "")
        if not address:
            continue
        about = message if message is not None and message.recipient.lower() == address.lower() else \
            await _last_message_to(session, address)
        if await _record(session, report.kind, address.lower(), recipient, about, inbound, settings):
            done += 1
    return done


def _failed(recipient: Recipient) -> bool:
    return recipient.hard or recipient.action == "failed" or recipient.status.startswith("5")


async def _record(session: AsyncSession, kind: str, address: str, recipient: Recipient, message: Any,
                  inbound: InboundEmail, settings: Settings) -> bool:
    now = clock.now()
    lead_id = message.lead_id if message is not None else await session.scalar(
        select(Lead.id).where(Lead.email == address, Lead.erased_at.is_(None))
    )
    made = await session.execute(insert_ignore(session, bounces_t).returning(bounces_t.c.id).values(
        id=new_id(), kind=kind, address=address, message_id=message.id if message is not None else None,
        lead_id=lead_id, inbound_email_id=inbound.id, status=recipient.status[:20],
        reply_code=recipient.reply_code[:3], reason=recipient.reason[:50], hard=recipient.hard,
        diagnostic=recipient.diagnostic[:1000], occurred_at=now,
    ))
    if made.scalar() is None:
        return False  # this report was acted on before
    reason = "complaint" if kind == "complaint" else "hard_bounce" if recipient.hard else None
    if reason is None and await _soft_bounces(session, address, settings) >= settings.soft_bounce_limit:
        reason = "soft_bounces"
    if reason is not None:
        await session.execute(insert_ignore(session, suppressions_t).values(
            id=new_id(), channel="email", address=address, topic="", reason=reason, lead_id=lead_id,
            message_id=message.id if message is not None else None,
            detail=f"{recipient.status} {recipient.reason}".strip()[:500], created_at=now,
        ))
    if lead_id is not None:
        inbound.lead_id = inbound.lead_id or lead_id
        data = {
            "message_id": str(message.id) if message is not None else None,
            "campaign": message.campaign if message is not None else None, "status": recipient.status,
            "reason": recipient.reason, "hard": recipient.hard or reason is not None,
        }
        await record_activity(session, lead_id, "email_complained" if kind == "complaint" else "email_bounced", data)
    return True


async def _soft_bounces(session: AsyncSession, address: str, settings: Settings) -> int:
    since = clock.now() - timedelta(days=settings.soft_bounce_days)
    b = bounces_t.c
    return int(await session.scalar(
        select(func.count()).where(b.address == address, b.kind == "bounce", b.hard.is_(False), b.occurred_at >= since)
    ) or 0)


async def _verp_message(session: AsyncSession, inbound: InboundEmail, tokens: MessageTokens) -> Any:
    """The message a bounce is about, from the bounce+<token>@ address it was returned to."""
    envelope = (inbound.details or {}).get("envelope_to") or []
    for address in [*envelope, inbound.rcpt_to or ""]:
        token = parse_bounce_address(str(address))
        if token is None:
            continue
        try:
            message_id, _ = tokens.read("bounce", token)
        except Forbidden:
            continue
        m = messages_t.c
        found = (await session.execute(
            select(m.id, m.lead_id, m.recipient, m.campaign).where(m.id == message_id)
        )).first()
        if found is not None:
            return found
    return None


async def _last_message_to(session: AsyncSession, address: str) -> Any:
    m = messages_t.c
    return (await session.execute(
        select(m.id, m.lead_id, m.recipient, m.campaign)
        .where(m.channel == "email", func.lower(m.recipient) == address, m.sent_at.is_not(None))
        .order_by(m.sent_at.desc()).limit(1)
    )).first()


async def request_optin(session: AsyncSession, request: OptinRequested, settings: Settings) -> uuid.UUID | None:
    """Queue the double opt-in confirmation mail for a pending consent (once per consent)."""
    lead_id, consent_id = request.lead_id, request.consent_id
    lead = (await session.execute(
        select(leads_t.c.email, leads_t.c.country, leads_t.c.erased_at).where(leads_t.c.id == lead_id)
    )).first()
    if lead is None or not lead.email or lead.erased_at is not None:
        return None
    token = MessageTokens(settings.signing_keys()).make("optin", consent_id)
    locale = "ru" if (lead.country or "RU").upper() in CIS else "en"
    message_id, _ = await queue_message(session, Outgoing(
        key=f"optin:{consent_id}", channel="email", recipient=lead.email, kind="transactional", lead_id=lead_id,
        template=f"system:optin:{locale}", campaign=request.form or None, step="optin",
        payload={"context": {"confirm_url": f"{settings.base_url.rstrip('/')}/optin/{token}"}},
    ))
    return message_id
