from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from core.db import Database
from core.outbox import OutboxEvent
from core.settings import Settings
from leads.intake.email import accept_email, receive_email
from leads.intake.mail.kind import classify
from leads.models import Activity, InboundEmail, Lead, Touchpoint
from tests.conftest import make_key

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "mail"


def shared_bounces() -> Path:
    """The labelled bounce collection kept beside the repository (shared/data/bounces)."""
    folder = Path(os.environ.get("NURTURE_TEST_BOUNCES", Path(__file__).resolve().parents[3] / "shared/data/bounces"))
    if not (folder / "labels.json").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"bounce samples not found in {folder}")
        pytest.skip(f"bounce samples not found in {folder} (set NURTURE_TEST_BOUNCES)")
    return folder


def message(
    sender: Address | str = Address("Иван Петров", addr_spec="ivan.petrov@example.ru"),
    to: str = "sales@company.ru",
    subject: str = "Вопрос о тарифах",
    text: str | None = "Здравствуйте! Сколько стоит тариф «Бизнес» на 20 сотрудников?",
    html: str | None = None,
    message_id: str | None = None,
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="example.ru")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    if text is not None:
        msg.set_content(text)
    if html is not None:
        if text is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


@pytest.fixture
async def mail_key(db: Database) -> dict[str, str]:
    return {"authorization": f"Bearer {await make_key(db, 'leads:write')}", "content-type": "message/rfc822"}


async def post(client: httpx.AsyncClient, key: dict[str, str], raw: bytes, **params: str) -> httpx.Response:
    return await client.post("/v1/inbound/email", content=raw, headers=key, params=params)


async def count(db: Database, table: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def event_names(db: Database) -> Counter[str]:
    async with db.sessions() as session:
        return Counter(await session.scalars(select(OutboxEvent.name)))


async def test_inquiry_becomes_a_lead_with_the_cyrillic_name_and_the_plus_address_campaign(
    client: httpx.AsyncClient, db: Database, mail_key: dict[str, str]
) -> None:
    raw = message(to="Отдел продаж <sales+spring-sale@company.ru>")
    assert b"=?utf-8?" in raw.lower()  # the name really travels RFC 2047-encoded
    resp = await post(client, mail_key, raw)
    assert resp.status_code == 201, resp.text
    assert resp.json()["kind"] == "inquiry" and resp.json()["lead_id"]

    async with db.sessions() as session:
        lead = await session.get(Lead, uuid.UUID(resp.json()["lead_id"]))
        assert lead is not None
        touchpoint = await session.scalar(select(Touchpoint).where(Touchpoint.lead_id == lead.id))
        activity = await session.scalar(select(Activity).where(Activity.lead_id == lead.id))
    assert touchpoint is not None and activity is not None
    assert (lead.email, lead.first_name, lead.last_name) == ("ivan.petrov@example.ru", "Иван", "Петров")
    assert lead.source_channel == "email"
    assert (touchpoint.channel, touchpoint.campaign) == ("email", "spring-sale")
    assert activity.type == "email_received"
    assert activity.data["subject"] == "Вопрос о тарифах"
    assert "тариф «Бизнес»" in activity.data["excerpt"]


async def test_html_only_inquiry_keeps_readable_text_and_russian_name_order(
    client: httpx.AsyncClient, db: Database, mail_key: dict[str, str]
) -> None:
    html = "<html><head><style>p{color:red}</style></head><body><p>Нужен <b>счёт</b> на оплату</p></body></html>"
    sender = Address("Сидорова Анна Павловна", addr_spec="anna@example.ru")
    resp = await post(client, mail_key, message(sender=sender, text=None, html=html))
    assert resp.status_code == 201, resp.text
    async with db.sessions() as session:
        lead = await session.scalar(select(Lead))
        activity = await session.scalar(select(Activity))
    assert lead is not None and activity is not None
    assert (lead.first_name, lead.last_name) == ("Анна", "Сидорова")
    assert activity.data["excerpt"] == "Нужен счёт на оплату"


async def test_reply_keeps_the_campaign_of_the_message_it_answers(
    client: httpx.AsyncClient, db: Database, mail_key: dict[str, str]
) -> None:
    first_id = "<first-1@example.ru>"
    await post(client, mail_key, message(to="sales+webinar-march@company.ru", message_id=first_id))
    reply = message(
        to="sales@company.ru", subject="Re: Вопрос о тарифах", text="И ещё вопрос про скидки",
        In_Reply_To="<our-answer@company.ru>", References=f"{first_id} <our-answer@company.ru>",
    )
    resp = await post(client, mail_key, reply)
    assert resp.status_code == 201, resp.text
    async with db.sessions() as session:
        campaigns = list(await session.scalars(select(Touchpoint.campaign).order_by(Touchpoint.occurred_at)))
    assert campaigns == ["webinar-march", "webinar-march"]
    assert await count(db, Lead) == 1


async def test_redelivered_message_is_stored_once_and_answers_200(
    client: httpx.AsyncClient, db: Database, mail_key: dict[str, str]
) -> None:
    raw = message(message_id="<same@example.ru>")
    first = await post(client, mail_key, raw)
    again = await post(client, mail_key, raw)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert (await count(db, InboundEmail), await count(db, Activity)) == (1, 1)


async def test_contact_form_mail_from_noreply_uses_the_reply_to_person(
    client: httpx.AsyncClient, db: Database, mail_key: dict[str, str]
) -> None:
    raw = message(sender="Сайт <noreply@company.ru>", Reply_To="Ольга Смирнова <olga@example.ru>")
    resp = await post(client, mail_key, raw)
    assert resp.status_code == 201
    async with db.sessions() as session:
        lead = await session.scalar(select(Lead))
    assert lead is not None
    assert (lead.email, lead.first_name) == ("olga@example.ru", "Ольга")


async def test_every_bounce_and_complaint_sample_is_recognised_and_never_becomes_a_lead(
    db: Database, settings: Settings
) -> None:
    samples = shared_bounces()
    labels = json.loads((samples / "labels.json").read_text())
    expected: dict[str, str] = {}
    written: Counter[str] = Counter()
    async with db.sessions() as session:
        for name, recipients in labels.items():
            expected[name] = "complaint" if recipients[0]["reason"] == "feedback" else "bounce"
            reception = await accept_email(session, (samples / name).read_bytes(), settings=settings)
            assert reception.email.kind == expected[name], name
            assert reception.email.lead_id is None, name
            if not reception.duplicate:
                written[reception.email.kind] += 1
        await session.commit()
    assert len(expected) == 229
    assert await count(db, Lead) == 0
    names = await event_names(db)
    assert names["email.bounced"] == written["bounce"] > 150
    assert names["email.complained"] == written["complaint"] > 10
    assert "lead.created" not in names


async def test_bounce_posted_over_http_records_what_the_report_says(
    client: httpx.AsyncClient, db: Database, mail_key: dict[str, str]
) -> None:
    resp = await post(client, mail_key, (SAMPLES / "rfc3464-26.eml").read_bytes(), mail_from="")
    assert resp.status_code == 201 and resp.json()["kind"] == "bounce" and resp.json()["lead_id"] is None
    async with db.sessions() as session:
        [event] = await session.scalars(select(OutboxEvent).where(OutboxEvent.name == "email.bounced"))
        bounce = await session.get(InboundEmail, uuid.UUID(event.payload["inbound_email_id"]))
    assert bounce is not None and set(event.payload) == {"inbound_email_id", "lead_id"}
    [recipient] = bounce.details["recipients"]
    assert recipient["status"] == "5.1.1" and recipient["action"] == "failed"
    assert "@" in recipient["recipient"] and recipient["diagnostic_code"]

    arf = await post(client, mail_key, (SAMPLES / "arf-16.eml").read_bytes())
    assert arf.json()["kind"] == "complaint"
    async with db.sessions() as session:
        [complaint] = await session.scalars(select(OutboxEvent).where(OutboxEvent.name == "email.complained"))
        report = await session.get(InboundEmail, uuid.UUID(complaint.payload["inbound_email_id"]))
    assert report is not None
    assert report.details["feedback_type"] == "abuse" and len(report.details["recipients"]) == 7


@pytest.mark.parametrize(
    "headers",
    [
        {"subject": "Автоответ: Вопрос о тарифах"},
        {"subject": "Automatic reply: pricing"},
        {"subject": "Out of Office"},
        {"subject": "Re: pricing", "Auto_Submitted": "auto-replied"},
        {"subject": "Re: pricing", "X_Autoreply": "yes"},
        {"subject": "Newsletter", "Precedence": "bulk"},
    ],
)
async def test_auto_replies_never_become_leads_and_emit_auto_replied(
    client: httpx.AsyncClient, db: Database, mail_key: dict[str, str], headers: dict[str, str]
) -> None:
    resp = await post(client, mail_key, message(text="Я в отпуске до 10 марта.", **headers))
    assert resp.status_code == 201
    assert resp.json()["kind"] == "auto_reply" and resp.json()["lead_id"] is None
    assert await count(db, Lead) == 0
    assert (await event_names(db))["email.auto_replied"] == 1


async def test_auto_submitted_no_is_a_person_writing(client: httpx.AsyncClient, mail_key: dict[str, str]) -> None:
    resp = await post(client, mail_key, message(Auto_Submitted="no"))
    assert resp.json()["kind"] == "inquiry" and resp.json()["lead_id"]


async def test_mail_without_a_usable_sender_is_stored_but_no_lead(
    client: httpx.AsyncClient, db: Database, mail_key: dict[str, str]
) -> None:
    for raw in (
        message(sender="noreply@shop.example"),
        b"Subject: hello\r\n\r\nno From header at all\r\n",
        message(sender="not an address"),
    ):
        resp = await post(client, mail_key, raw)
        assert resp.status_code == 201 and resp.json()["lead_id"] is None
    assert await count(db, InboundEmail) == 3
    assert await count(db, Lead) == 0


async def test_wrong_type_empty_oversized_or_unauthenticated_posts_get_clear_4xx(
    client: httpx.AsyncClient, mail_key: dict[str, str], settings: Settings
) -> None:
    raw = message()
    json_headers = {**mail_key, "content-type": "application/json"}
    as_json = await client.post("/v1/inbound/email", content=raw, headers=json_headers)
    assert as_json.status_code == 415 and as_json.json()["error"]["field"] == "content-type"
    assert (await post(client, mail_key, b"  \r\n")).status_code == 422
    unauthenticated = await client.post("/v1/inbound/email", content=raw, headers={"content-type": "message/rfc822"})
    assert unauthenticated.status_code == 401
    settings.max_email_bytes = 1000
    assert (await post(client, mail_key, raw + b"x" * 2000)).status_code == 413


async def test_receive_email_twice_returns_the_first_row_and_one_lead(db: Database, settings: Settings) -> None:
    raw = message(message_id="<twice@example.ru>")
    async with db.sessions() as session:
        first = await receive_email(session, raw, "ivan.petrov@example.ru", ["sales@company.ru"], settings=settings)
        await session.commit()
    async with db.sessions() as session:
        again = await receive_email(session, raw, "ivan.petrov@example.ru", ["sales@company.ru"], settings=settings)
        await session.commit()
    assert again.id == first.id and first.lead_id is not None
    assert (await count(db, Lead), await count(db, Activity)) == (1, 1)


def test_classify_keeps_a_customers_complaint_about_delivery_an_inquiry() -> None:
    raw = message(subject="Заказ не доставлен / order not delivered", text="Где мой заказ №123?")
    assert classify(raw).kind == "inquiry"


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.one_of(
        st.binary(min_size=1, max_size=400),
        st.builds(
            lambda headers, body: (headers + "\r\n\r\n" + body).encode("utf-8", "surrogatepass"),
            st.lists(
                st.tuples(
                    st.sampled_from(["From", "To", "Subject", "Message-ID", "Content-Type", "References",
                                     "Reply-To", "Auto-Submitted", "X-Failed-Recipients", "Return-Path"]),
                    st.text(max_size=60),
                ),
                max_size=8,
            ).map(lambda pairs: "\r\n".join(f"{k}: {v}" for k, v in pairs)),
            st.text(max_size=200),
        ),
    )
)
async def test_any_bytes_posted_as_email_get_2xx_or_4xx_never_5xx(
    client: httpx.AsyncClient, mail_key: dict[str, str], raw: bytes
) -> None:
    resp = await post(client, mail_key, raw)
    assert resp.status_code < 500, resp.text
