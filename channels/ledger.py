"""The delivery ledger's moves: queue once per idempotency key, claim before sending, record what
the send came to, and settle sends whose result never came back.

The rule that keeps a message from going out twice: a sender claims the row (`queued`/`deferred`
→ `sending`) in a transaction of its own and commits it *before* it sends; the result is recorded
in another. A send whose result was lost (the process died, the recording failed) leaves the row
in `sending`: it is never claimed again, and `settle_stale` marks it `unknown` for a person to
look at. Only a definite "not accepted" (an SMTP 4xx, a connection that failed before the server
took the message) is `deferred` and tried again, with backoff, up to MAX_ATTEMPTS.

Takes an AsyncSession and never commits, except `send_one`, which owns its transactions."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import messages_t
from core import clock
from core.db import Database, insert_ignore, one_of, skip_locked
from core.errors import Invalid
from core.ids import new_id
from core.retry import backoff

QUEUED, SENDING, SENT, DEFERRED, FAILED, UNKNOWN, SUPPRESSED = (
    "queued", "sending", "sent", "deferred", "failed", "unknown", "suppressed"
)
CLAIMABLE = (QUEUED, DEFERRED)
CHANNELS = ("email", "sms", "webhook", "messenger", "postal")
KINDS = ("marketing", "transactional")
MAX_ATTEMPTS = 8
RETRY_SECONDS = 60.0  # the first wait after a deferral; doubling, up to RETRY_CAP
RETRY_CAP = 6 * 3600.0
STALE_AFTER = timedelta(minutes=10)  # a send claimed this long ago with no result is `unknown`


@dataclass(frozen=True)
class Outgoing:
    """What a caller (a campaign step, a test send, a confirmation mail) asks to be sent."""

    key: str  # idempotency key, e.g. "enrollment:<id>:step:<n>:rotation:<k>"
    channel: str
    recipient: str
    kind: str = "marketing"
    lead_id: uuid.UUID | None = None
    template: str | None = None
    campaign: str | None = None
    step: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    not_before: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """What one send came to, as the channel tells it."""

    state: str  # SENT, DEFERRED, FAILED or UNKNOWN
    response: str | None = None  # the server's or provider's answer
    provider_id: str | None = None
    retry_after: float | None = None  # seconds, when the other side said (DEFERRED only)
    reason: str | None = None


Sender = Callable[[Row[Any]], Awaitable[Outcome]]


def _check(out: Outgoing) -> None:
    if not out.key or len(out.key) > 200:
        raise Invalid("an idempotency key of 1 to 200 characters is required", field="key")
    if out.channel not in CHANNELS:
        raise Invalid(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    if out.kind not in KINDS:
        raise Invalid("kind must be marketing or transactional", field="kind")
    if not out.recipient or len(out.recipient) > 500:
        raise Invalid("a recipient of 1 to 500 characters is required", field="recipient")


async def queue_message(session: AsyncSession, out: Outgoing) -> tuple[uuid.UUID, bool]:
    """Queue the message once per key: returns its id and whether this call queued it (False: the
    key was queued before, and that message is left as it is)."""
    _check(out)
    now = clock.now()
    statement = insert_ignore(session, messages_t).returning(messages_t.c.id).values(
        id=new_id(), idempotency_key=out.key, channel=out.channel, kind=out.kind,
        lead_id=out.lead_id, recipient=out.recipient, template=out.template, campaign=out.campaign, step=out.step,
        payload=out.payload, state=QUEUED, attempts=0, next_attempt_at=out.not_before or now,
        created_at=now, updated_at=now,
    )
    if (made := (await session.execute(statement)).scalar()) is not None:
        return made, True
    existing = await session.scalar(select(messages_t.c.id).where(messages_t.c.idempotency_key == out.key))
    assert existing is not None  # the insert was ignored because this row exists
    return existing, False


async def claim(session: AsyncSession, message_id: uuid.UUID) -> Row[Any] | None:
    """Take the message for sending if it is queued or deferred and due; None if it is not
    (another sender has it, it was sent, its time has not come). Commit before sending."""
    now = clock.now()
    statement = (
        update(messages_t)
        .where(messages_t.c.id == message_id, messages_t.c.state.in_(CLAIMABLE),
               or_(messages_t.c.next_attempt_at.is_(None), messages_t.c.next_attempt_at <= now))
        .values(state=SENDING, attempts=messages_t.c.attempts + 1, claimed_at=now, updated_at=now)
        .returning(*messages_t.c)
    )
    return (await session.execute(statement)).first()


async def record(session: AsyncSession, message_id: uuid.UUID, outcome: Outcome,
                 max_attempts: int = MAX_ATTEMPTS, retry_seconds: float = RETRY_SECONDS) -> str | None:
    """Record what the send came to; returns the state the message is left in, or None when it
    was no longer `sending` (settled meanwhile as unknown: the late result is not applied)."""
    attempts = await session.scalar(
        select(messages_t.c.attempts).where(messages_t.c.id == message_id, messages_t.c.state == SENDING)
    )
    if attempts is None:
        return None
    values = outcome_values(attempts, outcome, clock.now(), max_attempts, retry_seconds)
    done = await session.execute(
        update(messages_t).where(messages_t.c.id == message_id, messages_t.c.state == SENDING).values(values)
    )
    return str(values["state"]) if done.rowcount else None  # type: ignore[attr-defined]


def outcome_values(attempts: int, outcome: Outcome, now: datetime, max_attempts: int = MAX_ATTEMPTS,
                   retry_seconds: float = RETRY_SECONDS) -> dict[str, Any]:
    """The columns a message in `sending` gets for its outcome (state, reason, response, provider id,
    sent_at, next_attempt_at): always the same keys, so many can be written in one statement."""
    if outcome.state not in (SENT, DEFERRED, FAILED, UNKNOWN, SUPPRESSED):
        raise ValueError(f"not an outcome: {outcome.state}")
    state, reason, next_attempt = outcome.state, outcome.reason, None
    if state == DEFERRED:
        if attempts >= max_attempts:
            state, reason = FAILED, f"gave up after {attempts} attempts"
        else:
            wait = outcome.retry_after if outcome.retry_after else backoff(attempts, retry_seconds, RETRY_CAP)
            next_attempt = now + timedelta(seconds=wait)
    return {
        "state": state, "reason": (reason or "")[:200] or None, "response": (outcome.response or "")[:1000] or None,
        "provider_id": (outcome.provider_id or "")[:255] or None, "sent_at": now if state == SENT else None,
        "next_attempt_at": next_attempt, "updated_at": now,
    }


async def claim_due(session: AsyncSession, limit: int) -> list[Row[Any]]:
    """Take up to `limit` queued or deferred messages whose time has come, oldest first, for sending
    (rows other senders hold are skipped). Commit before sending."""
    now = clock.now()
    m = messages_t.c
    due_ids = (
        select(m.id).where(m.state.in_(CLAIMABLE), m.next_attempt_at <= now).order_by(m.next_attempt_at).limit(limit)
    )
    ids = list(await session.scalars(skip_locked(due_ids, session)))
    if not ids:
        return []
    statement = (
        update(messages_t).where(one_of(session, m.id, ids), m.state.in_(CLAIMABLE))
        .values(state=SENDING, attempts=m.attempts + 1, claimed_at=now, updated_at=now)
        .returning(*messages_t.c)
    )
    return list((await session.execute(statement)).all())


async def record_many(session: AsyncSession, results: list[tuple[uuid.UUID, dict[str, Any]]]) -> None:
    """Write many messages' outcome values (`outcome_values`, plus any other columns, the same keys
    for all) in one statement; a message no longer `sending` is left alone."""
    if not results:
        return
    m = messages_t.c
    keys = list(results[0][1])
    statement = (
        update(messages_t).where(m.id == bindparam("message_id"), m.state == SENDING)
        .values({k: bindparam(f"new_{k}") for k in keys})
    )
    rows = [{"message_id": message_id, **{f"new_{k}": v for k, v in values.items()}} for message_id, values in results]
    await session.execute(statement.execution_options(synchronize_session=False), rows)


async def send_one(db: Database, message_id: uuid.UUID, send: Sender) -> str | None:
    """Claim, send, record, each step committed on its own; returns the state the message is left
    in, or None when it was not claimable. A sender that raises leaves the message `unknown`:
    whether it went out cannot be told, so it is not sent again."""
    async with db.sessions() as session:
        row = await claim(session, message_id)
        await session.commit()
    if row is None:
        return None
    try:
        outcome = await send(row)
    except Exception as exc:  # noqa: BLE001 - recorded on the message; never resent on a guess
        outcome = Outcome(UNKNOWN, response=repr(exc)[:1000], reason="the send failed without a definite answer")
    async with db.sessions() as session:
        state = await record(session, message_id, outcome)
        await session.commit()
    return state


async def due(session: AsyncSession, limit: int) -> list[uuid.UUID]:
    """Queued or deferred messages whose time has come, oldest first (rows other sweepers hold are
    skipped)."""
    query = (
        select(messages_t.c.id)
        .where(messages_t.c.state.in_(CLAIMABLE), messages_t.c.next_attempt_at <= clock.now())
        .order_by(messages_t.c.next_attempt_at).limit(limit)
    )
    return list(await session.scalars(skip_locked(query, session)))


async def settle_stale(session: AsyncSession, limit: int, older_than: timedelta = STALE_AFTER) -> int:
    """Sends claimed longer ago than `older_than` whose result never came back become `unknown`
    (never resent automatically); returns how many."""
    now = clock.now()
    query = (
        select(messages_t.c.id)
        .where(messages_t.c.state == SENDING, messages_t.c.claimed_at < now - older_than)
        .order_by(messages_t.c.claimed_at).limit(limit)
    )
    if not (ids := list(await session.scalars(skip_locked(query, session)))):
        return 0
    await session.execute(
        update(messages_t).where(messages_t.c.id.in_(ids), messages_t.c.state == SENDING).values(
            state=UNKNOWN, updated_at=now,
            reason=f"no result recorded {int(older_than.total_seconds())} s after the send began; not resent",
        )
    )
    return len(ids)
