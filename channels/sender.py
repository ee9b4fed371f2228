"""The sender: takes due messages off the ledger in batches and sends them through their channels.

One pass: claim a batch (committed before anything is sent), judge each message at send time
(suppressed / deferred by pacing / go: `channels.gate`), render and prepare what goes, hand it to the
channel adapters concurrently, and record every outcome in one statement. A message whose outcome
is never recorded stays `sending` and is settled `unknown` by the sweep: never sent twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from channels import content
from channels.base import Channel, Delivery
from channels.email.prepare import Mailer, prepare
from channels.gate import Pacing, Verdict, judge
from channels.http import BLOCKED
from channels.ledger import DEFERRED, FAILED, SUPPRESSED, UNKNOWN, Outcome, claim_due, outcome_values, record_many
from channels.models import messages_t, suppressions_t
from core import clock
from core.db import Database, insert_ignore, one_of
from core.errors import NurtureError
from core.ids import new_id
from core.logging import get_logger
from core.retry import wait_or_stop

log = get_logger("channels.sender")


@dataclass
class Sent:
    """What one pass did, by final state."""

    claimed: int = 0
    states: dict[str, int] = field(default_factory=dict)


class Sender:
    def __init__(self, db: Database, adapters: Mapping[str, Channel], mailer: Mailer, pacing: Pacing,
                 secret: str, batch: int = 200) -> None:
        self.db = db
        self.adapters = adapters
        self.mailer = mailer
        self.pacing = pacing
        self.secret = secret  # keys the hashes of erased addresses in suppressions
        self.batch = batch

    async def send_due(self, limit: int | None = None) -> Sent:
        """One pass over up to `limit` (default: the batch size) due messages."""
        now = clock.now()
        async with self.db.sessions() as session:
            rows = await claim_due(session, limit or self.batch)
            if not rows:
                await session.commit()
                return Sent()
            material = await content.load(session, rows, self.mailer)
            verdicts = await judge(session, rows, self.pacing, self.secret, now, material.topics)
            await _hold(session, rows, verdicts, now)
            await session.commit()
        going = [row for row in rows if verdicts[row.id].go]
        outcomes = await asyncio.gather(*(self._send(row, material) for row in going))
        results = [(row.id, {**outcome_values(row.attempts, outcome, clock.now()), **extra})
                   for row, (outcome, extra) in zip(going, outcomes, strict=True)]
        by_columns: dict[tuple[str, ...], list[tuple[uuid.UUID, dict[str, Any]]]] = {}
        for result in results:
            by_columns.setdefault(tuple(result[1]), []).append(result)
        async with self.db.sessions() as session:
            for same in by_columns.values():
                await record_many(session, same)
            await _blocked(session, going, outcomes, clock.now())
            await session.commit()
        sent = Sent(claimed=len(rows))
        for verdict in verdicts.values():
            if not verdict.go:
                state = SUPPRESSED if verdict.suppressed else DEFERRED
                sent.states[state] = sent.states.get(state, 0) + 1
        for _, values in results:
            sent.states[values["state"]] = sent.states.get(values["state"], 0) + 1
        return sent

    async def run(self, stop: asyncio.Event, poll_seconds: float) -> None:
        """Send until `stop` is set: a full batch is followed at once by the next, else a short wait."""
        while not stop.is_set():
            try:
                sent = await self.send_due()
            except Exception as exc:  # the database is away: try again after the wait
                log.warning("send pass failed", error=repr(exc))
                sent = Sent()
            if sent.claimed:
                log.info("sent", claimed=sent.claimed, **sent.states)
            if sent.claimed < self.batch:
                await wait_or_stop(stop, poll_seconds)

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()

    async def _send(self, row: Row[Any], material: content.Material) -> tuple[Outcome, dict[str, Any]]:
        """The outcome, and what else the ledger row keeps: an email's tracked links, a letter's text and
        address (the print export reads them)."""
        adapter = self.adapters.get(row.channel)
        if adapter is None:
            return Outcome(FAILED, reason=f"the {row.channel} channel is not configured"), {}
        try:
            delivery, extra = self._delivery(row, material)
        except NurtureError as exc:  # a template that does not render for this recipient, a bad address
            return Outcome(FAILED, reason=f"could not be made: {exc}"[:200]), {}
        try:
            return await adapter.deliver(delivery), extra
        except Exception as exc:  # noqa: BLE001 - whether it went out cannot be told: never resent
            log.warning("adapter failed", channel=row.channel, message=str(row.id), error=repr(exc))
            unknown = Outcome(UNKNOWN, response=repr(exc)[:1000], reason="the send failed without a definite answer")
            return unknown, extra

    def _delivery(self, row: Row[Any], material: content.Material) -> tuple[Delivery, dict[str, Any]]:
        context = material.context(row)
        if row.channel == "email":
            prepared = prepare(self.mailer, row, material.email_template(row), context)
            return prepared.delivery, {"links": prepared.links}
        text = material.text(row, context)
        data = dict((row.payload or {}).get("data") or {})
        extra: dict[str, Any] = {}
        if row.channel == "postal":
            data = {**material.postal_address(row), **data}
            extra["payload"] = {**(row.payload or {}), "letter": {"text": text, "address": data}}
        return Delivery(message_id=row.id, recipient=row.recipient, kind=row.kind, text=text, data=data), extra


async def _hold(session: AsyncSession, rows: list[Row[Any]], verdicts: dict[uuid.UUID, Verdict],
                now: Any) -> None:
    """Messages that may not go now: suppressed for good, or deferred to their time without the
    claim counting as an attempt."""
    held = []
    for row in rows:
        verdict = verdicts[row.id]
        if verdict.go:
            continue
        held.append((row.id, {
            "state": SUPPRESSED if verdict.suppressed else DEFERRED, "reason": verdict.reason,
            "next_attempt_at": verdict.until, "attempts": row.attempts - 1, "updated_at": now,
        }))
    await record_many(session, held)


async def _blocked(session: AsyncSession, rows: list[Row[Any]], outcomes: list[tuple[Outcome, Any]],
                   now: Any) -> None:
    """A recipient who blocked the channel (STOP to the SMS provider, the bot blocked) is suppressed
    on that channel, so nothing more is tried."""
    for row, (outcome, _) in zip(rows, outcomes, strict=True):
        if outcome.state == FAILED and (outcome.reason or "").startswith(BLOCKED):
            await session.execute(insert_ignore(session, suppressions_t).values(
                id=new_id(), channel=row.channel, address=row.recipient.lower(), topic="", reason="blocked",
                lead_id=row.lead_id, message_id=row.id, detail=(outcome.reason or "")[:500], created_at=now,
            ))


async def messages(session: AsyncSession, ids: list[uuid.UUID]) -> list[Row[Any]]:
    """The ledger rows of these messages (for tests and the API)."""
    return list((await session.execute(select(messages_t).where(one_of(session, messages_t.c.id, ids)))).all())
