"""SMS, messenger, webhook and postal messages through the same ledger and sender as email: rendered
for the lead, handed to the provider (faked with httpx.MockTransport), receipts and STOP replies
coming back over HTTP, the print house's CSV."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from channels.base import Channel
from channels.gate import Pacing
from channels.ledger import FAILED, SENT, SUPPRESSED, Outgoing, queue_message
from channels.messenger import TelegramChannel
from channels.models import Suppression, Template
from channels.postal import PostalChannel
from channels.sender import Sender
from channels.setup import mailer
from channels.sms.channel import SmsChannel
from channels.sms.generic import GenericSmsProvider
from channels.sms.webhooks import hook_key
from channels.webhook import WebhookChannel, verify
from core import clock
from core.db import Database
from core.settings import Settings, use_settings
from tests.channels.test_send import add_lead
from tests.conftest import make_key, stored_message
from tests.fakes import Remote

GATEWAY = {"url": "https://sms.example.net/send", "body": {"phone": "{to}", "msg": "{text}"}, "id_field": "data.id"}
PHONE = "+79161234567"


@pytest.fixture(autouse=True)
def daytime(frozen_now: datetime) -> datetime:
    return frozen_now


@pytest.fixture
def settings(settings: Settings) -> Iterator[Settings]:
    here = settings.model_copy(update={"sms_provider": json.dumps(GATEWAY)})
    use_settings(here)
    yield here
    use_settings(None)


def sender_with(db: Database, settings: Settings, adapters: dict[str, Channel]) -> Sender:
    return Sender(db, adapters, mailer(settings), Pacing.from_settings(settings), "secret")


async def add_text_template(db: Database, key: str, channel: str, body: str) -> None:
    async with db.sessions() as session:
        session.add(Template(key=key, name=key, channel=channel, kind="marketing", locale="ru", body=body))
        await session.commit()


async def queue(db: Database, channel: str, recipient: str, lead_id: uuid.UUID | None, key: str = "k1",
                **fields: Any) -> uuid.UUID:
    async with db.sessions() as session:
        message_id, _ = await queue_message(session, Outgoing(
            key=key, channel=channel, recipient=recipient, lead_id=lead_id, campaign="webinar", **fields,
        ))
        await session.commit()
    return message_id


async def test_an_sms_is_rendered_for_the_lead_sent_and_its_receipt_marks_it_delivered(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    gateway = Remote.json(body={"data": {"id": "gw-1001"}})
    sms = SmsChannel(GenericSmsProvider.from_dict(GATEWAY, transport=gateway.transport))
    sender = sender_with(db, settings, {"sms": sms})
    lead_id = await add_lead(db, phone=PHONE)
    await add_text_template(db, "sms-webinar", "sms", "{{ lead.first_name }}, вебинар завтра в 11:00. Ждём!")
    message_id = await queue(db, "sms", PHONE, lead_id, template="sms-webinar")

    await sender.send_due()

    [request] = gateway.requests
    assert json.loads(request.content) == {"phone": PHONE, "msg": "Анна, вебинар завтра в 11:00. Ждём!"}
    row = await stored_message(db, message_id)
    assert row.state == SENT and row.provider_id == "gw-1001"

    key = hook_key(settings)
    receipt = await client.post(f"/v1/sms/receipts?key={key}", json={"id": "gw-1001", "status": "DELIVRD"})
    forged = await client.post("/v1/sms/receipts?key=guess", json={"id": "gw-1001", "status": "failed"})
    assert receipt.status_code == 204 and forged.status_code == 401
    row = await stored_message(db, message_id)
    assert row.delivery_status == "delivered" and row.delivered_at == clock.now()


async def test_a_stop_reply_stops_every_sms_to_the_number_and_start_lifts_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    gateway = Remote.json(body={"data": {"id": "gw-1"}})
    sender = sender_with(db, settings, {"sms": SmsChannel(
        GenericSmsProvider.from_dict(GATEWAY, transport=gateway.transport))})
    lead_id = await add_lead(db, phone=PHONE)
    key = hook_key(settings)

    stop = await client.post(f"/v1/sms/inbound?key={key}", data={"from": PHONE, "text": " Стоп "})
    assert stop.status_code == 204
    stopped = await queue(db, "sms", PHONE, lead_id, "k1", payload={"text": "Скидка 20%"})
    await sender.send_due()
    assert (await stored_message(db, stopped)).state == SUPPRESSED and not gateway.requests

    assert (await client.post(f"/v1/sms/inbound?key={key}", data={"from": PHONE, "text": "START"})).status_code == 204
    again = await queue(db, "sms", PHONE, lead_id, "k2", payload={"text": "Скидка 20%"})
    await sender.send_due()
    assert (await stored_message(db, again)).state == SENT and len(gateway.requests) == 1


async def test_a_bot_blocked_by_the_user_is_not_tried_again(db: Database, settings: Settings) -> None:
    blocked = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
    telegram = Remote.json(403, blocked)
    bot = TelegramChannel("123456:ABC-secret-token", transport=telegram.transport)
    sender = sender_with(db, settings, {"messenger": bot})
    lead_id = await add_lead(db)
    first = await queue(db, "messenger", "987654321", lead_id, "k1", payload={"text": "Привет!"})

    await sender.send_due()
    second = await queue(db, "messenger", "987654321", lead_id, "k2", payload={"text": "Привет ещё раз!"})
    await sender.send_due()

    row = await stored_message(db, first)
    assert row.state == FAILED and (row.reason or "").startswith("blocked:")
    assert "ABC-secret-token" not in (row.response or "") + (row.reason or "")
    assert (await stored_message(db, second)).state == SUPPRESSED and len(telegram.requests) == 1


async def test_a_webhook_posts_the_data_signed_for_the_receiver(db: Database, settings: Settings) -> None:
    receiver = Remote.json(200, {"ok": True})

    async def public(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    hook = WebhookChannel("hook-secret", client=httpx.AsyncClient(transport=receiver.transport),
                          resolver=public)
    sender = sender_with(db, settings, {"webhook": hook})
    message_id = await queue(db, "webhook", "https://crm.example.com/hooks/nurture", None,
                             kind="transactional", payload={"data": {"event": "lead.qualified", "score": 87}})

    await sender.send_due()

    [request] = receiver.requests
    assert json.loads(request.content) == {"event": "lead.qualified", "score": 87}
    assert request.headers["host"] == "crm.example.com" and request.headers["x-nurture-message"] == str(message_id)
    assert verify("hook-secret", request.headers["x-nurture-timestamp"], request.content,
                  request.headers["x-nurture-signature"], clock.now())
    assert (await stored_message(db, message_id)).state == SENT


async def test_letters_are_exported_for_the_print_house_with_their_personal_text(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    sender = sender_with(db, settings, {"postal": PostalChannel()})
    await add_text_template(db, "letter", "postal", "Уважаемая {{ lead.first_name }}! Приглашаем на выставку.")
    anna = await add_lead(db, last_name="Смирнова", city="Казань", country="RU",
                          custom={"postal_code": "420111", "address": "ул. Баумана, д. 1, кв. 2"})
    nowhere = await add_lead(db, email="no-address@example.ru")
    sent = await queue(db, "postal", "Казань", anna, "k1", template="letter")
    failed = await queue(db, "postal", "—", nowhere, "k2", template="letter")

    await sender.send_due()

    assert (await stored_message(db, sent)).state == SENT
    assert (await stored_message(db, failed)).state == FAILED
    headers = {"authorization": f"Bearer {await make_key(db, 'leads:read')}"}
    answer = await client.get("/v1/postal/export.csv", params={"campaign": "webinar", "excel": "true"},
                              headers=headers)
    assert answer.status_code == 200 and answer.content.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig")), delimiter=";"))
    assert rows == [{
        "message_id": str(sent), "name": "Анна Смирнова", "postal_code": "420111", "country": "RU",
        "region": "", "city": "Казань", "address": "ул. Баумана, д. 1, кв. 2",
        "text": "Уважаемая Анна! Приглашаем на выставку.",
    }]
    async with db.sessions() as session:
        assert not list(await session.scalars(select(Suppression)))
