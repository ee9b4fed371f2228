"""Inbound email as an intake channel: store each message once (per Message-ID) and turn an inquiry
into a lead, or a bounce, complaint or auto-reply into an event for the email channel."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import lock_keys
from core.emails import normalize_email
from core.errors import Invalid
from core.mail import unique
from core.outbox import emit
from core.settings import Settings
from core.text import scrub
from leads.events import EmailAutoReplied, EmailBounced, EmailComplained, ReturnedMail
from leads.intake.interaction import Origin
from leads.intake.mail.kind import DAEMONS, ParsedMail, classify
from leads.intake.mail.message import local_part, split_name, truncate
from leads.models import Channel, InboundEmail
from leads.schemas import clean_profile
from leads.service import find_lead, record_intake

EVENTS: dict[str, type[ReturnedMail]] = {
    "bounce": EmailBounced, "complaint": EmailComplained, "auto_reply": EmailAutoReplied,
}

NO_REPLY = DAEMONS | {"noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply"}


@dataclass
class Reception:
    email: InboundEmail
    duplicate: bool  # the same Message-ID arrived before; nothing new was written


async def receive_email(
    session: AsyncSession,
    raw: bytes,
    mail_from: str | None = None,
    rcpt_to: str | Sequence[str] | None = None,
    *,
    settings: Settings,
) -> InboundEmail:
    """Store one inbound message and act on it (see `accept_email`). Never commits."""
    return (await accept_email(session, raw, mail_from, rcpt_to, settings=settings)).email


async def accept_email(
    session: AsyncSession,
    raw: bytes,
    mail_from: str | None = None,
    rcpt_to: str | Sequence[str] | None = None,
    *,
    settings: Settings,
) -> Reception:
    """Store the message once per Message-ID; an inquiry becomes or updates a lead, a bounce,
    complaint or auto-reply becomes an outbox event for the email channel. Never commits."""
    parsed = classify(raw, envelope_from=mail_from)
    if parsed.message_id:
        # A redelivered message (SMTP retry, mail system re-post) must not act twice.
        await lock_keys(session, f"inbound-email:{parsed.message_id}")
        first = await session.scalar(select(InboundEmail).where(InboundEmail.message_id == parsed.message_id))
        if first is not None:
            return Reception(first, duplicate=True)

    envelope_rcpts = [rcpt_to] if isinstance(rcpt_to, str) else list(rcpt_to or [])
    recipients = unique(scrub(r).strip().strip("<>").lower() for r in envelope_rcpts) + parsed.to
    details = _jsonable_text({**parsed.details, "envelope_from": mail_from, "envelope_to": envelope_rcpts})
    row = InboundEmail(
        kind=parsed.kind,
        message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to,
        mail_from=truncate(parsed.from_address or (scrub(mail_from) if mail_from else None), 320),
        rcpt_to=truncate(recipients[0] if recipients else None, 320),
        subject=truncate(parsed.subject, 998),
        details=details,
        size=len(raw),
        raw=None if parsed.kind == "inquiry" else raw,
        received_at=clock.now(),
    )
    session.add(row)
    await session.flush()
    if parsed.kind == "inquiry":
        await _record_inquiry(session, row, parsed, recipients, settings)
    else:
        await _report_automatic(session, row, parsed)
    await session.flush()
    return Reception(row, duplicate=False)


async def _record_inquiry(
    session: AsyncSession, row: InboundEmail, parsed: ParsedMail, recipients: list[str], settings: Settings
) -> None:
    # Website contact forms mail "From: noreply@site" with the visitor in Reply-To.
    address, name = parsed.from_address, parsed.from_name
    if parsed.reply_to and parsed.reply_to != parsed.from_address:
        address, name = parsed.reply_to, parsed.reply_to_name
    reason = _unusable_sender(address, settings)
    if reason:
        row.details = {**row.details, "not_a_lead": reason}
        return
    campaign = _plus_campaign(recipients) or await _thread_campaign(session, parsed.references)
    first_name, last_name = split_name(name, address or "")
    profile = clean_profile({"email": address}, None)
    with contextlib.suppress(Invalid):  # an odd display name is no reason to lose the inquiry
        profile.update(clean_profile({"first_name": first_name, "last_name": last_name}, None))
    result = await record_intake(
        session, profile, Origin(channel=Channel.email, source="email", campaign=campaign),
        "email_received",
        {
            "subject": truncate(parsed.subject, 500), "excerpt": parsed.text, "message_id": parsed.message_id,
            "inbound_email_id": str(row.id), "to": row.rcpt_to,
        },
        overwrite=False,  # a display name must not replace what the lead typed into a form
    )
    row.lead_id = result.lead.id
    row.details = {**row.details, "campaign": campaign}


def _unusable_sender(address: str | None, settings: Settings) -> str | None:
    if not address:
        return "no sender address"
    try:
        normalized = normalize_email(address)
    except Invalid:
        return "sender address is not valid"
    local = local_part(normalized).split("+", 1)[0]
    if local in NO_REPLY:
        return "sender is an automatic mailbox"
    own = str(getattr(settings, "bounce_address", "") or "").strip().lower()
    if own and (normalized == own or _same_mailbox(normalized, own)):
        return "sender is our own bounce address"
    return None


def _same_mailbox(address: str, other: str) -> bool:
    """bounces+token@d and bounces@d are one mailbox (VERP tags the local part)."""
    local, _, domain = address.partition("@")
    other_local, _, other_domain = other.partition("@")
    return domain == other_domain and local.split("+", 1)[0] == other_local.split("+", 1)[0]


def _plus_campaign(recipients: list[str]) -> str | None:
    """sales+spring-sale@example.com → "spring-sale"."""
    for address in recipients:
        local = address.split("@", 1)[0]
        if "+" in local:
            tag = local.split("+", 1)[1].strip()
            if tag:
                return tag[:200]
    return None


async def _thread_campaign(session: AsyncSession, references: list[str]) -> str | None:
    """A reply keeps the campaign of the message it answers."""
    if not references:
        return None
    earlier = await session.scalars(
        select(InboundEmail)
        .where(InboundEmail.message_id.in_(references), InboundEmail.kind == "inquiry")
        .order_by(InboundEmail.received_at.desc())
    )
    for email in earlier:
        campaign = (email.details or {}).get("campaign")
        if isinstance(campaign, str) and campaign:
            return campaign
    return None


async def _report_automatic(session: AsyncSession, row: InboundEmail, parsed: ParsedMail) -> None:
    """Bounces, complaints and auto-replies never become leads; the email channel acts on them."""
    if parsed.kind == "auto_reply" and parsed.from_address:
        # An out-of-office from a known lead is worth noting on that lead, not a new lead.
        try:
            lead = await find_lead(session, email=normalize_email(parsed.from_address))
        except Invalid:
            lead = None
        row.lead_id = lead.id if lead is not None else None
    # Ids only: the handler loads the stored message (recipients, statuses, diagnostics), so an
    # erasure never has to chase personal data through event payloads.
    await emit(session, EVENTS[parsed.kind](inbound_email_id=row.id, lead_id=row.lead_id))


def _jsonable_text(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(k): _jsonable_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable_text(v) for v in value]
    return value
