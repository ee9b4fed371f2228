from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import AsyncIterator
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core.db import Database
from core.errors import Conflict, Invalid, NurtureError, RateLimited, TooLarge
from core.outbox import OutboxEvent
from core.settings import Settings
from leads.models import InboundEmail, Lead, Touchpoint
from leads.smtpd import start_smtpd

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "mail"


def inquiry() -> bytes:
    msg = EmailMessage()
    msg["From"] = Address("Мария Кузнецова", addr_spec="maria@example.ru")
    msg["To"] = "sales+expo-2026@company.ru"
    msg["Subject"] = "Заявка с выставки"
    msg["Message-ID"] = "<expo-1@example.ru>"
    msg.set_content("Добрый день! Пришлите, пожалуйста, коммерческое предложение.")
    return msg.as_bytes()


def send(port: int, raw: bytes, sender: str = "maria@example.ru", rcpt: str = "sales+expo-2026@company.ru") -> None:
    wire = re.sub(rb"\r?\n", b"\r\n", raw)  # SMTP lines end in CRLF; smtplib sends bytes as given
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(sender, [rcpt], wire)


async def listening(db: Database, settings: Settings) -> AsyncIterator[int]:
    smtpd = await start_smtpd(db, settings, "127.0.0.1", 0)
    try:
        yield smtpd.port
    finally:
        await smtpd.stop()


@pytest.fixture
async def smtp_port(db: Database, settings: Settings) -> AsyncIterator[int]:
    async for port in listening(db, settings):
        yield port


async def test_inquiry_sent_over_smtp_is_a_lead_in_the_database_when_250_arrives(
    smtp_port: int, db: Database
) -> None:
    await asyncio.to_thread(send, smtp_port, inquiry())
    async with db.sessions() as session:
        lead = await session.scalar(select(Lead))
        touchpoint = await session.scalar(select(Touchpoint))
    assert lead is not None and touchpoint is not None
    assert (lead.email, lead.first_name, lead.last_name) == ("maria@example.ru", "Мария", "Кузнецова")
    assert touchpoint.campaign == "expo-2026"


async def test_resent_message_over_smtp_is_accepted_again_but_stored_once(smtp_port: int, db: Database) -> None:
    await asyncio.to_thread(send, smtp_port, inquiry())
    await asyncio.to_thread(send, smtp_port, inquiry())
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboundEmail)) == 1


async def test_bounce_over_smtp_with_null_sender_is_recorded_and_no_lead(smtp_port: int, db: Database) -> None:
    await asyncio.to_thread(send, smtp_port, (SAMPLES / "lhost-qmail-01.eml").read_bytes(), "", "bounces@company.ru")
    async with db.sessions() as session:
        email = await session.scalar(select(InboundEmail))
        events = list(await session.scalars(select(OutboxEvent.name)))
        leads = await session.scalar(select(func.count()).select_from(Lead))
    assert email is not None
    assert email.kind == "bounce" and email.details["envelope_from"] == ""
    assert events == ["email.bounced"] and leads == 0


async def test_database_failure_answers_451_so_the_sender_retries(settings: Settings) -> None:
    broken = Database("postgresql+asyncpg://nobody@127.0.0.1:1/nowhere")
    try:
        async for port in listening(broken, settings):
            with pytest.raises(smtplib.SMTPDataError) as refused:
                await asyncio.to_thread(send, port, inquiry())
            assert refused.value.smtp_code == 451
    finally:
        await broken.dispose()


async def test_message_over_the_limit_is_refused_with_552(db: Database, settings: Settings) -> None:
    small = settings.model_copy(update={"max_email_bytes": 2000})
    async for port in listening(db, small):
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused:
            await asyncio.to_thread(send, port, inquiry() + b"x" * 5000)
        assert refused.value.smtp_code == 552
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboundEmail)) == 0


@pytest.mark.parametrize(
    ("refusal", "code"),
    [
        (Invalid("the sender address is not valid\r\n250 ok", field="from"), 554),
        (Conflict("this person asked to be forgotten", field="email"), 554),
        (TooLarge("the message is too big", field="body"), 552),
        (RateLimited("too many messages, try later", field="from"), 451),
    ],
)
async def test_message_refused_for_good_gets_a_5xx_so_the_sender_stops_retrying(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch, refusal: NurtureError, code: int
) -> None:
    import leads.smtpd

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise refusal

    monkeypatch.setattr(leads.smtpd, "accept_email", refuse)
    async for port in listening(db, settings):
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send, port, inquiry())
    assert refused.value.smtp_code == code
    error = refused.value.smtp_error
    reply = error.decode() if isinstance(error, bytes) else error
    assert "\n" not in reply  # one reply line: the reason cannot end it early or add another
    if code == 554:
        assert refusal.message.split("\r")[0] in reply
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboundEmail)) == 0
