"""The sender end to end on the capture transport: a queued message is rendered for its lead, signed
and kept; what may not go now is suppressed or deferred, never dropped; nothing is sent twice."""

from __future__ import annotations

import email
import uuid
from datetime import UTC, datetime, timedelta
from email.message import Message as MailMessage
from email.policy import default
from typing import Any

import pytest
from sqlalchemy import select

from channels.gate import address_hash
from channels.ledger import DEFERRED, FAILED, SENT, SUPPRESSED, Outgoing, queue_message
from channels.models import CapturedMail, Suppression, Template
from channels.sender import Sender
from channels.setup import build_sender
from channels.starters import starter
from core import clock
from core.db import Database
from core.settings import Settings
from leads.models import Consent, Lead
from tests.conftest import stored_message


async def add_lead(db: Database, **fields: Any) -> uuid.UUID:
    async with db.sessions() as session:
        lead = Lead(**{"email": "anna@example.ru", "first_name": "Анна", "source_channel": "form", **fields})
        session.add(lead)
        await session.commit()
        return lead.id


async def add_template(db: Database, key: str = "welcome", topic: str | None = None, **fields: Any) -> None:
    welcome = starter("welcome", "ru")
    async with db.sessions() as session:
        session.add(Template(**{
            "key": key, "name": "Добро пожаловать", "channel": "email", "kind": "marketing", "topic": topic,
            "locale": "ru", "subject": welcome.subject, "preheader": welcome.preheader, "body": welcome.body,
            **fields,
        }))
        await session.commit()


async def queue(db: Database, lead_id: uuid.UUID | None, key: str = "e1:s1:r0", recipient: str = "anna@example.ru",
                **fields: Any) -> uuid.UUID:
    async with db.sessions() as session:
        message_id, _ = await queue_message(session, Outgoing(**{
            "key": key, "channel": "email", "recipient": recipient, "lead_id": lead_id, "template": "welcome",
            "campaign": "spring", "step": "1", **fields,
        }))
        await session.commit()
    return message_id


async def captured(db: Database) -> list[CapturedMail]:
    async with db.sessions() as session:
        return list(await session.scalars(select(CapturedMail).order_by(CapturedMail.received_at)))


def parsed(mail: CapturedMail) -> MailMessage:
    return email.message_from_bytes(mail.raw, policy=default)


@pytest.fixture(autouse=True)
def daytime(frozen_now: datetime) -> datetime:
    """12:30 in Moscow, the default time zone: outside the quiet hours unless a test moves the clock."""
    return frozen_now


@pytest.fixture
def sender(db: Database, settings: Settings) -> Sender:
    return build_sender(db, settings.model_copy(update={"base_url": "https://mail.example.com"}))


async def test_a_queued_email_is_rendered_for_its_lead_and_kept_by_the_capture_server(
    db: Database, sender: Sender, frozen_now: datetime
) -> None:
    lead_id = await add_lead(db, company="Ромашка")
    await add_template(db)
    message_id = await queue(db, lead_id)

    done = await sender.send_due()

    assert done.states == {SENT: 1}
    [mail] = await captured(db)
    assert mail.message_id == message_id and mail.recipient == "anna@example.ru"
    msg = parsed(mail)
    assert msg["Subject"] == "Анна, добро пожаловать!"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://mail.example.com/u/" in msg["List-Unsubscribe"]
    assert mail.envelope_from.startswith("bounce+") and mail.envelope_from.endswith("@example.com")
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Ромашка" in html and "https://mail.example.com/t/o/" in html
    assert "https://example.com/ru/guide" not in html  # every link goes through the signed redirect
    row = await stored_message(db, message_id)
    assert row.state == SENT and row.sent_at == frozen_now and row.attempts == 1
    assert row.links and row.links[0] == "https://example.com/ru/guide"


async def test_a_message_is_sent_once_however_often_the_sender_runs(db: Database, sender: Sender) -> None:
    lead_id = await add_lead(db)
    await add_template(db)
    await queue(db, lead_id)
    await queue(db, lead_id)  # the same idempotency key: the same message

    for _ in range(3):
        await sender.send_due()

    assert len(await captured(db)) == 1


async def test_unsubscribed_bounced_erased_and_withdrawn_leads_are_suppressed_not_dropped(
    db: Database, sender: Sender, settings: Settings
) -> None:
    await add_template(db)
    unsubscribed = await add_lead(db, email="u@example.ru")
    bounced = await add_lead(db, email="b@example.ru")
    erased = await add_lead(db, email=None, erased_at=clock.now())
    withdrawn = await add_lead(db, email="w@example.ru")
    fine = await add_lead(db, email="f@example.ru")
    async with db.sessions() as session:
        now = clock.now()
        session.add_all([
            Suppression(channel="email", address="u@example.ru", topic="", reason="unsubscribed", created_at=now),
            Suppression(channel="email", address="b@example.ru", topic="", reason="hard_bounce", created_at=now),
            Consent(lead_id=withdrawn, purpose="marketing_email", granted=False, source="api"),
        ])
        await session.commit()
    ids = {
        "unsubscribed": await queue(db, unsubscribed, "k1", "u@example.ru"),
        "bounced": await queue(db, bounced, "k2", "b@example.ru"),
        "erased": await queue(db, erased, "k3", "gone@example.ru"),
        "withdrawn": await queue(db, withdrawn, "k4", "w@example.ru"),
        "fine": await queue(db, fine, "k5", "f@example.ru"),
        # Transactional mail ignores an unsubscribe, not a hard bounce.
        "receipt": await queue(db, unsubscribed, "k6", "u@example.ru", kind="transactional"),
        "receipt to a bounce": await queue(db, bounced, "k7", "b@example.ru", kind="transactional"),
    }

    await sender.send_due()

    states = {name: (m.state, m.reason) for name, m in [(n, await stored_message(db, i)) for n, i in ids.items()]}
    assert states == {
        "unsubscribed": (SUPPRESSED, "unsubscribed"), "bounced": (SUPPRESSED, "hard_bounce"),
        "erased": (SUPPRESSED, "erased"), "withdrawn": (SUPPRESSED, "no consent"), "fine": (SENT, None),
        "receipt": (SENT, None), "receipt to a bounce": (SUPPRESSED, "hard_bounce"),
    }
    assert sorted(m.recipient for m in await captured(db)) == ["f@example.ru", "u@example.ru"]


async def test_an_erased_persons_hashed_suppression_still_holds(
    db: Database, sender: Sender, settings: Settings
) -> None:
    await add_template(db)
    hashed = address_hash(settings.derived_secret("suppressions"), "email", "Back@Example.ru")
    async with db.sessions() as session:
        session.add(Suppression(channel="email", address=hashed, topic="", reason="complaint", created_at=clock.now()))
        await session.commit()
    lead_id = await add_lead(db, email="back@example.ru")
    message_id = await queue(db, lead_id, recipient="back@example.ru")

    await sender.send_due()

    assert (await stored_message(db, message_id)).state == SUPPRESSED and not await captured(db)


async def test_a_topic_unsubscribe_stops_that_topic_only(db: Database, sender: Sender) -> None:
    await add_template(db, "news", topic="news")
    await add_template(db, "webinars", topic="webinars")
    lead_id = await add_lead(db)
    async with db.sessions() as session:
        session.add(Suppression(channel="email", address="anna@example.ru", topic="news", reason="unsubscribed",
                                created_at=clock.now()))
        await session.commit()
    news = await queue(db, lead_id, "k1", template="news")
    webinar = await queue(db, lead_id, "k2", template="webinars")

    await sender.send_due()

    suppressed = await stored_message(db, news)
    assert suppressed.state == SUPPRESSED and suppressed.reason == "unsubscribed: news"
    assert (await stored_message(db, webinar)).state == SENT


async def test_quiet_hours_defer_marketing_to_the_morning_in_the_leads_time_zone(
    db: Database, sender: Sender
) -> None:
    await add_template(db)
    lead_id = await add_lead(db, timezone="Asia/Vladivostok")  # UTC+10
    message_id = await queue(db, lead_id)
    receipt = await queue(db, lead_id, "k2", kind="transactional")

    with clock.frozen(datetime(2026, 3, 2, 12, 0, tzinfo=UTC)):  # 22:00 in Vladivostok
        await sender.send_due()

    row = await stored_message(db, message_id)
    assert row.state == DEFERRED and row.reason == "quiet hours" and row.attempts == 0
    assert row.next_attempt_at == datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 09:00 the next day there
    assert (await stored_message(db, receipt)).state == SENT
    with clock.frozen(datetime(2026, 3, 2, 23, 0, tzinfo=UTC)):
        await sender.send_due()
    assert (await stored_message(db, message_id)).state == SENT


async def test_the_frequency_cap_defers_the_fourth_marketing_email_of_the_day(
    db: Database, sender: Sender, frozen_now: datetime
) -> None:
    await add_template(db)
    lead_id = await add_lead(db)
    first = [await queue(db, lead_id, f"k{n}") for n in range(3)]
    await sender.send_due()
    clock.advance(timedelta(hours=2))
    fourth = await queue(db, lead_id, "k3")
    receipt = await queue(db, lead_id, "k4", kind="transactional")

    await sender.send_due()

    assert {(await stored_message(db, i)).state for i in first} == {SENT}
    row = await stored_message(db, fourth)
    assert row.state == DEFERRED and row.reason == "frequency cap"
    assert row.next_attempt_at == frozen_now + timedelta(hours=24)  # when the first of the three leaves the window
    assert (await stored_message(db, receipt)).state == SENT


async def test_a_message_whose_template_is_gone_fails_with_the_reason(db: Database, sender: Sender) -> None:
    lead_id = await add_lead(db)
    message_id = await queue(db, lead_id, template="no-such-template")

    await sender.send_due()

    row = await stored_message(db, message_id)
    assert row.state == FAILED and "no-such-template" in (row.reason or "")


async def test_a_channel_that_is_not_configured_fails_the_message_clearly(db: Database, sender: Sender) -> None:
    async with db.sessions() as session:
        message_id, _ = await queue_message(session, Outgoing(
            key="sms1", channel="sms", recipient="+79161234567", kind="transactional", payload={"text": "Код: 1234"},
        ))
        await session.commit()

    await sender.send_due()

    row = await stored_message(db, message_id)
    assert row.state == FAILED and row.reason == "the sms channel is not configured"
