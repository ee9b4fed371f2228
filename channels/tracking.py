"""What recipients do with a message: open it, click its links, unsubscribe (from everything or one
topic), subscribe again, confirm a double opt-in. Each lands on the lead's timeline; opens and clicks
are flagged when a machine made them (privacy proxies, link scanners), which scoring then ignores.
Takes an AsyncSession and never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from channels.engagement import ALL_AT_ONCE_SECONDS, machine_reason
from channels.models import messages_t, suppressions_t, templates_t
from channels.tokens import MessageTokens
from core import clock
from core.db import insert_ignore
from core.errors import Conflict, NotFound
from core.ids import new_id
from leads.models import Activity, Consent
from leads.schemas import ConsentIn
from leads.service import get_lead, record_activity, record_consent

UNSUBSCRIBE_ALL = ""  # the topic of a suppression that stops every marketing message


@dataclass(frozen=True)
class Visit:
    """What the tracking request showed."""

    user_agent: str | None
    ip: str | None
    method: str = "GET"


async def opened(session: AsyncSession, tokens: MessageTokens, token: str, visit: Visit) -> None:
    """Record an open (a bad or foreign token records nothing: the pixel is served anyway)."""
    message_id, _ = tokens.read("open", token)
    message = await _message(session, message_id)
    if message is None or message.lead_id is None:
        return
    now = clock.now()
    machine = machine_reason(user_agent=visit.user_agent, method=visit.method, ip=visit.ip)
    await _engaged(session, message, "email_opened", {}, machine, now)


async def clicked(session: AsyncSession, tokens: MessageTokens, token: str, visit: Visit) -> str:
    """The link recorded for this token at render (only that: no open redirect); the click recorded."""
    message_id, link = tokens.read("click", token)
    message = await _message(session, message_id)
    links = (message.links or []) if message is not None else []
    if message is None or link is None or not 0 <= link < len(links):
        raise NotFound("this link is not known (the message may have been erased)", field="token")
    url = str(links[link])
    if message.lead_id is None:
        return url
    now = clock.now()
    recent = await _recent_clicks(session, message.lead_id, message.id, now)
    machine = machine_reason(
        user_agent=visit.user_agent, method=visit.method, ip=visit.ip, delivered_at=message.sent_at, at=now,
        recent_clicks=recent, url=url,
    )
    await _engaged(session, message, "email_clicked", {"url": url, "link": link}, machine, now)
    return url


async def _engaged(session: AsyncSession, message: Any, kind: str, data: dict[str, Any], machine: str | None,
                   now: datetime) -> None:
    data = {"message_id": str(message.id), "campaign": message.campaign, "step": message.step, **data}
    if machine is not None:
        data["machine"] = machine
    await record_activity(session, message.lead_id, kind, data, now)
    if machine is None:
        # The first open and click by a person, for campaign statistics; a click is an open too.
        m = messages_t.c
        await session.execute(update(messages_t).where(m.id == message.id, m.opened_at.is_(None)).values(opened_at=now))
        if kind == "email_clicked":
            await session.execute(
                update(messages_t).where(m.id == message.id, m.clicked_at.is_(None)).values(clicked_at=now)
            )


async def _recent_clicks(session: AsyncSession, lead_id: uuid.UUID, message_id: uuid.UUID,
                         now: datetime) -> list[tuple[str, datetime]]:
    since = now - timedelta(seconds=ALL_AT_ONCE_SECONDS * 2)
    found = await session.execute(
        select(Activity.data, Activity.occurred_at)
        .where(Activity.lead_id == lead_id, Activity.type == "email_clicked", Activity.occurred_at >= since)
    )
    return [(str(data.get("url")), at) for data, at in found if data.get("message_id") == str(message_id)]


async def _message(session: AsyncSession, message_id: uuid.UUID) -> Any:
    m = messages_t.c
    query = select(m.id, m.lead_id, m.channel, m.recipient, m.links, m.sent_at, m.campaign, m.step, m.template)
    return (await session.execute(query.where(m.id == message_id))).first()


async def _unsubscribe_message(session: AsyncSession, tokens: MessageTokens, token: str) -> Any:
    """The message an unsubscribe token names; Forbidden for a bad token, NotFound once it is gone."""
    message_id, _ = tokens.read("unsubscribe", token)
    message = await _message(session, message_id)
    if message is None:
        raise NotFound("this link is not known (the message may have been erased)", field="token")
    return message


@dataclass(frozen=True)
class Preferences:
    """What the unsubscribe page shows for the message's recipient."""

    message_id: uuid.UUID
    address: str
    locale: str
    topics: list[str]  # every topic marketing mail is sent under
    unsubscribed: set[str]  # topics stopped; UNSUBSCRIBE_ALL in it: everything


async def preferences(session: AsyncSession, tokens: MessageTokens, token: str) -> Preferences:
    message = await _unsubscribe_message(session, tokens, token)
    t, s = templates_t.c, suppressions_t.c
    topics = sorted(set(await session.scalars(
        select(t.topic).where(t.kind == "marketing", t.archived_at.is_(None), t.topic.is_not(None))
    )))
    stopped = set(await session.scalars(
        select(s.topic).where(s.channel == message.channel, s.address == message.recipient.lower(),
                              s.reason == "unsubscribed")
    ))
    locale = await session.scalar(select(t.locale).where(t.key == message.template)) if message.template else None
    return Preferences(message.id, message.recipient, (locale or "ru")[:2], [x for x in topics if x], stopped)


async def unsubscribe(session: AsyncSession, tokens: MessageTokens, token: str, topics: list[str] | None,
                      source: str, ip: str | None, consent_purpose: str) -> Preferences:
    """Stop marketing to the message's recipient: every topic (`topics` None) or those listed. Takes
    effect at once: the sender checks suppressions when it sends. Idempotent."""
    message = await _unsubscribe_message(session, tokens, token)
    address, now = message.recipient.lower(), clock.now()
    for topic in topics if topics is not None else [UNSUBSCRIBE_ALL]:
        await session.execute(insert_ignore(session, suppressions_t).values(
            id=new_id(), channel=message.channel, address=address, topic=topic[:100], reason="unsubscribed",
            lead_id=message.lead_id, message_id=message.id, detail=source, created_at=now,
        ))
    if message.lead_id is not None:
        data = {"message_id": str(message.id), "campaign": message.campaign, "topics": topics or "all",
                "source": source}
        await record_activity(session, message.lead_id, "unsubscribed", data, now)
        if topics is None:
            await _consent(session, message.lead_id, consent_purpose, False, source, ip)
    return await preferences(session, tokens, token)


async def resubscribe(session: AsyncSession, tokens: MessageTokens, token: str, ip: str | None,
                      consent_purpose: str) -> Preferences:
    """The recipient changed their mind on the page: their unsubscribes are lifted (bounces and
    complaints stay) and the consent is granted again."""
    message = await _unsubscribe_message(session, tokens, token)
    s = suppressions_t.c
    await session.execute(delete(suppressions_t).where(
        s.channel == message.channel, s.address == message.recipient.lower(), s.reason == "unsubscribed"
    ))
    if message.lead_id is not None:
        await record_activity(session, message.lead_id, "resubscribed", {"message_id": str(message.id)})
        await _consent(session, message.lead_id, consent_purpose, True, "preferences page", ip)
    return await preferences(session, tokens, token)


async def confirm_optin(session: AsyncSession, tokens: MessageTokens, token: str, ip: str | None) -> bool:
    """Confirm a double opt-in: the pending consent the token names is granted (its wording kept as
    evidence). Returns False when it was confirmed before."""
    consent_id, _ = tokens.read("optin", token)
    pending = await session.get(Consent, consent_id)
    if pending is None:
        raise NotFound("this confirmation link is not known", field="token")
    latest = await session.scalar(
        select(Consent.granted).where(Consent.lead_id == pending.lead_id, Consent.purpose == pending.purpose)
        .order_by(Consent.occurred_at.desc(), Consent.id.desc()).limit(1)
    )
    if latest:
        return False
    lead = await get_lead(session, pending.lead_id)
    if lead.erased_at is not None:
        raise Conflict("this person's data was erased", field="token")
    consent = ConsentIn(purpose=pending.purpose, granted=True, wording=pending.wording)
    await record_consent(session, lead, consent, "double opt-in", ip)
    return True


async def _consent(session: AsyncSession, lead_id: uuid.UUID, purpose: str, granted: bool, source: str,
                   ip: str | None) -> None:
    lead = await get_lead(session, lead_id)
    if lead.erased_at is None:
        await record_consent(session, lead, ConsentIn(purpose=purpose, granted=granted), source, ip)


async def resubscribe_topics(session: AsyncSession, current: Preferences, topics: set[str]) -> None:
    """Topics ticked again on the page are lifted (an unsubscribe from everything is not: that has its button)."""
    wanted = [t for t in topics if t in current.unsubscribed and t != UNSUBSCRIBE_ALL]
    if not wanted:
        return
    message = await session.execute(select(messages_t.c.channel).where(messages_t.c.id == current.message_id))
    channel = message.scalar_one()
    s = suppressions_t.c
    await session.execute(delete(suppressions_t).where(
        s.channel == channel, s.address == current.address.lower(), s.reason == "unsubscribed", s.topic.in_(wanted)
    ))
