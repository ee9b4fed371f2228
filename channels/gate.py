"""Checked at send time, for each claimed message: may it go now, later, or never?

- never (`suppressed`, with the reason kept on the message): the lead was erased; the address is
  suppressed (hard bounce, complaint and repeated soft bounces stop every message; an unsubscribe
  stops marketing, for everything or one topic); marketing without consent (the latest consent for
  the purpose withdrawn or still waiting for its double opt-in confirmation, or none at all when
  consent is required);
- later (`deferred` to a time, not counted as an attempt): marketing over the frequency cap (at most
  K per lead in a rolling window, all campaigns and channels), or in the lead's quiet hours;
- now: everything else. Transactional messages skip consent, cap and quiet hours, not bounces.

Reads only; the sender applies the verdicts."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import messages_t, suppressions_t
from core.db import one_of
from core.errors import Invalid
from core.settings import Settings
from leads.models import consents_t, leads_t

# Suppressions that stop transactional messages too: the address does not work, the person complained,
# or blocked the channel (replied STOP to a provider, blocked the bot).
UNDELIVERABLE = ("hard_bounce", "complaint", "soft_bounces", "blocked")
COUNTED = ("sending", "sent", "unknown")  # what the frequency cap counts: claimed or gone out


@dataclass(frozen=True)
class Verdict:
    go: bool
    reason: str | None = None  # why suppressed or deferred
    until: datetime | None = None  # deferred to (None with go=False: suppressed)

    @property
    def suppressed(self) -> bool:
        return not self.go and self.until is None


SEND = Verdict(True)


@dataclass(frozen=True)
class Pacing:
    cap: int  # 0: no cap
    window: timedelta
    quiet: tuple[int, int] | None  # (from hour, to hour) local time
    default_zone: str
    require_consent: bool
    purpose: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Pacing:
        return cls(
            cap=settings.frequency_cap, window=timedelta(hours=settings.frequency_window_hours),
            quiet=quiet_hours(settings.quiet_hours), default_zone=settings.default_timezone,
            require_consent=settings.require_consent, purpose=settings.consent_purpose,
        )


def quiet_hours(text: str) -> tuple[int, int] | None:
    """"21-9" → (21, 9); "" → None."""
    if not text.strip():
        return None
    start, dash, end = text.partition("-")
    try:
        hours = (int(start), int(end))
    except ValueError:
        hours = (-1, -1)
    if not dash or not all(0 <= h <= 23 for h in hours) or hours[0] == hours[1]:
        raise Invalid(f"quiet hours are FROM-TO in whole hours, like 21-9: {text!r}", field="quiet_hours")
    return hours


def address_hash(secret: str, channel: str, address: str) -> str:
    """What an erased lead's suppression keeps instead of the address."""
    digest = hmac.new(secret.encode(), f"{channel}:{address.lower()}".encode(), hashlib.sha256).hexdigest()
    return f"hash:{digest}"


async def judge(session: AsyncSession, rows: Sequence[Row[Any]], pacing: Pacing, secret: str, now: datetime,
                topics: Mapping[uuid.UUID, str] | None = None) -> dict[uuid.UUID, Verdict]:
    """A verdict per claimed message (rows of `messages`); `topics`: each message's topic, if it has one."""
    if not rows:
        return {}
    lead_ids = list({r.lead_id for r in rows if r.lead_id is not None})
    leads = await _leads(session, lead_ids)
    blocked = await _suppressions(session, rows, secret)
    consent = await _consents(session, lead_ids, pacing.purpose) if any(r.kind == "marketing" for r in rows) else {}
    recent = await _recent(session, lead_ids, rows, now - pacing.window) if pacing.cap else {}
    verdicts: dict[uuid.UUID, Verdict] = {}
    for row in sorted(rows, key=lambda r: r.created_at):
        lead = leads.get(row.lead_id) if row.lead_id is not None else None
        topic = (topics or {}).get(row.id, "")
        verdict = _verdict(row, topic, lead, blocked, consent, pacing, now, secret)
        if verdict.go and row.kind == "marketing" and row.lead_id is not None and pacing.cap:
            times = recent.setdefault(row.lead_id, [])
            if len(times) >= pacing.cap:
                verdict = Verdict(False, "frequency cap", sorted(times)[-pacing.cap] + pacing.window)
            else:
                times.append(now)
        verdicts[row.id] = verdict
    return verdicts


def _verdict(row: Row[Any], topic: str, lead: Row[Any] | None, blocked: dict[tuple[str, str], dict[str, str]],
             consent: dict[uuid.UUID, bool], pacing: Pacing, now: datetime, secret: str) -> Verdict:
    if lead is not None and lead.erased_at is not None:
        return Verdict(False, "erased")
    marketing = row.kind == "marketing"
    address = row.recipient.lower()
    held = blocked.get((row.channel, address)) or blocked.get((row.channel, address_hash(secret, row.channel, address)))
    for blocked_topic, reason in (held or {}).items():
        if reason in UNDELIVERABLE or (marketing and blocked_topic in ("", topic)):
            one_topic = blocked_topic and reason not in UNDELIVERABLE
            return Verdict(False, f"{reason}: {blocked_topic}" if one_topic else reason)
    if not marketing:
        return SEND
    granted = consent.get(row.lead_id) if row.lead_id is not None else None
    if granted is False or (granted is None and pacing.require_consent):
        return Verdict(False, "no consent")
    if pacing.quiet is not None and lead is not None:
        later = _after_quiet(now, pacing.quiet, _zone(lead.timezone or pacing.default_zone, pacing.default_zone))
        if later is not None:
            return Verdict(False, "quiet hours", later)
    return SEND


def _after_quiet(now: datetime, quiet: tuple[int, int], zone: ZoneInfo) -> datetime | None:
    """When the quiet hours around `now` end, or None when `now` is not in them."""
    local = now.astimezone(zone)
    start, end = quiet
    hour = local.hour
    inside = (start <= hour or hour < end) if start > end else (start <= hour < end)
    if not inside:
        return None
    day = local.date() if hour < end else local.date() + timedelta(days=1)
    return datetime.combine(day, time(end), zone).astimezone(now.tzinfo)


@lru_cache(maxsize=512)
def _zone(name: str, fallback: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(fallback)


async def _leads(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    if not ids:
        return {}
    l = leads_t.c  # noqa: E741
    found = await session.execute(select(l.id, l.erased_at, l.timezone).where(one_of(session, l.id, ids)))
    return {r.id: r for r in found.all()}


async def _suppressions(session: AsyncSession, rows: Sequence[Row[Any]],
                        secret: str) -> dict[tuple[str, str], dict[str, str]]:
    addresses = {r.recipient.lower() for r in rows}
    addresses |= {address_hash(secret, r.channel, r.recipient) for r in rows}
    s = suppressions_t.c
    found = await session.execute(
        select(s.channel, s.address, s.topic, s.reason).where(one_of(session, s.address, list(addresses)))
    )
    blocked: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for channel, address, topic, reason in found:
        blocked[(channel, address)][topic] = reason
    return blocked


async def _consents(session: AsyncSession, ids: list[uuid.UUID], purpose: str) -> dict[uuid.UUID, bool]:
    """The latest consent per lead for the purpose."""
    if not ids:
        return {}
    c = consents_t.c
    found = await session.execute(
        select(c.lead_id, c.granted)
        .where(one_of(session, c.lead_id, ids), c.purpose == purpose)
        .order_by(c.occurred_at, c.id)
    )
    return {lead_id: granted for lead_id, granted in found}


async def _recent(session: AsyncSession, ids: list[uuid.UUID], rows: Sequence[Row[Any]],
                  since: datetime) -> dict[uuid.UUID, list[datetime]]:
    """When each lead's marketing messages of the window went (or were claimed), this batch left out."""
    if not ids:
        return {}
    m = messages_t.c
    at = func.coalesce(m.sent_at, m.claimed_at)
    found = await session.execute(
        select(m.id, m.lead_id, at).where(
            one_of(session, m.lead_id, ids), m.kind == "marketing", m.state.in_(COUNTED), at >= since,
        )
    )
    batch = {r.id for r in rows}
    recent: dict[uuid.UUID, list[datetime]] = defaultdict(list)
    for message_id, lead_id, when in found:
        if message_id not in batch:
            recent[lead_id].append(when)
    return recent
