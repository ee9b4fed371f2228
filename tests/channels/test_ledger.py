"""The delivery ledger: a message is queued once per key, claimed by one sender, never sent twice,
retried only after a definite "not accepted", and settled as unknown when its result is lost."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Row, select

from channels.ledger import (
    DEFERRED,
    FAILED,
    MAX_ATTEMPTS,
    SENT,
    UNKNOWN,
    Outcome,
    Outgoing,
    claim,
    due,
    queue_message,
    record,
    send_one,
    settle_stale,
)
from channels.models import Message
from core import clock
from core.db import Database
from core.errors import Invalid
from tests.conftest import stored_message


def welcome(**fields: Any) -> Outgoing:
    return Outgoing(**{"key": "enrollment:1:step:1:rotation:0", "channel": "email", "recipient": "anna@example.ru",
                       "template": "welcome", **fields})


async def queued(db: Database, out: Outgoing | None = None) -> uuid.UUID:
    async with db.sessions() as session:
        message_id, _ = await queue_message(session, out or welcome())
        await session.commit()
    return message_id


class Recorder:
    """A channel that answers what it is told to and counts what it was asked to send."""

    def __init__(self, *outcomes: Outcome | Exception) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[uuid.UUID] = []

    async def __call__(self, row: Row[Any]) -> Outcome:
        self.sent.append(row.id)
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome(SENT, "250 2.0.0 Ok", "<m@example.ru>")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_the_same_key_queues_one_message(db: Database) -> None:
    async with db.sessions() as session:
        first, made = await queue_message(session, welcome())
        again, made_again = await queue_message(session, welcome(recipient="other@example.ru"))
        await session.commit()
    assert made and not made_again and first == again
    assert (await stored_message(db, first)).recipient == "anna@example.ru"


async def test_bad_requests_name_the_field_and_queue_nothing(db: Database) -> None:
    for out, field in ((welcome(key=""), "key"), (welcome(channel="fax"), "channel"),
                       (welcome(kind="spam"), "kind"), (welcome(recipient=""), "recipient")):
        async with db.sessions() as session:
            with pytest.raises(Invalid) as caught:
                await queue_message(session, out)
        assert caught.value.field == field
    async with db.sessions() as session:
        assert (await session.scalars(select(Message))).first() is None


async def test_concurrent_senders_send_a_message_once(db: Database) -> None:
    message_id = await queued(db)
    channel = Recorder()
    states = await asyncio.gather(*(send_one(db, message_id, channel) for _ in range(8)))
    assert channel.sent == [message_id]
    assert sorted(states, key=str) == [None] * 7 + [SENT]
    sent = await stored_message(db, message_id)
    assert (sent.state, sent.attempts, sent.provider_id) == (SENT, 1, "<m@example.ru>")
    assert await send_one(db, message_id, channel) is None and len(channel.sent) == 1


async def test_a_deferred_message_waits_its_backoff_then_goes(db: Database, frozen_now: Any) -> None:
    message_id = await queued(db)
    channel = Recorder(Outcome(DEFERRED, "451 4.7.1 Try again later", retry_after=120))
    assert await send_one(db, message_id, channel) == DEFERRED
    assert await send_one(db, message_id, channel) is None  # not due yet
    async with db.sessions() as session:
        assert await due(session, 10) == []
    clock.advance(timedelta(seconds=121))
    async with db.sessions() as session:
        assert await due(session, 10) == [message_id]
    assert await send_one(db, message_id, channel) == SENT
    assert channel.sent == [message_id, message_id]
    assert (await stored_message(db, message_id)).attempts == 2


async def test_deferred_too_often_the_message_fails(db: Database, frozen_now: Any) -> None:
    message_id = await queued(db)
    channel = Recorder(*[Outcome(DEFERRED, "421 4.3.2 Service not available")] * MAX_ATTEMPTS)
    states = []
    for _ in range(MAX_ATTEMPTS):
        states.append(await send_one(db, message_id, channel))
        clock.advance(timedelta(days=1))
    assert states == [DEFERRED] * (MAX_ATTEMPTS - 1) + [FAILED]
    failed = await stored_message(db, message_id)
    assert failed.reason == f"gave up after {MAX_ATTEMPTS} attempts"
    assert await send_one(db, message_id, channel) is None


async def test_a_send_that_breaks_midway_is_unknown_and_never_resent(db: Database) -> None:
    message_id = await queued(db)
    channel = Recorder(TimeoutError("no reply after DATA"))
    assert await send_one(db, message_id, channel) == UNKNOWN
    assert await send_one(db, message_id, channel) is None
    lost = await stored_message(db, message_id)
    assert lost.state == UNKNOWN and "no reply after DATA" in (lost.response or "")
    assert channel.sent == [message_id]


async def test_a_send_whose_result_was_lost_becomes_unknown(db: Database, frozen_now: Any) -> None:
    """The sender died after claiming (or its recording failed): the row stays `sending`, is
    never claimed again, and the sweep marks it unknown once its lease is long over."""
    message_id = await queued(db)
    async with db.sessions() as session:
        assert await claim(session, message_id) is not None
        await session.commit()
    assert await send_one(db, message_id, Recorder()) is None
    async with db.sessions() as session:
        assert await settle_stale(session, 100) == 0
    clock.advance(timedelta(minutes=11))
    async with db.sessions() as session:
        assert await settle_stale(session, 100) == 1
        await session.commit()
    assert (await stored_message(db, message_id)).state == UNKNOWN
    async with db.sessions() as session:  # the late result of the lost send changes nothing
        assert await record(session, message_id, Outcome(SENT, "250 ok")) is None
