"""The channels API as marketers use it: templates validated on save (422 naming field and line), versioned and
archived; previews for a real or a sample lead; a test send that reaches the captured outbox; the ledger and the
suppression list."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from channels.ledger import Outgoing, queue_message
from channels.models import Message, Suppression, Template
from channels.setup import build_sender
from core import clock
from core.db import Database
from core.settings import Settings
from leads.models import Lead
from tests.conftest import make_key

BODY = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Здравствуйте, {{ lead.first_name }}! Компания: {{ lead.company }}</mj-text>
        <mj-button href="https://example.com/offer" css-class="offer">Открыть</mj-button>
        <mj-text><a href="{{ unsubscribe_url }}">Отписаться</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""
GREETING_LINE = 5  # the line of BODY with the greeting


def email_template(**overrides: Any) -> dict[str, Any]:
    template: dict[str, Any] = {
        "key": "welcome", "name": "Приветствие", "subject": "{{ lead.first_name }}, добро пожаловать",
        "preheader": "Коротко о главном", "body": BODY, "topic": "news",
    }
    template.update(overrides)
    return template


@pytest.fixture
async def marketer(db: Database) -> dict[str, str]:
    """A marketer's key: sets templates up (forms:write) and reads leads."""
    return {"authorization": f"Bearer {await make_key(db, 'forms:write', 'leads:read')}"}


async def save(client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    resp = await client.post("/v1/templates", json=email_template(**overrides), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def add_lead(db: Database, **fields: Any) -> uuid.UUID:
    async with db.sessions() as session:
        lead = Lead(**{"email": "svetlana@example.ru", "first_name": "Светлана", "company": "Ромашка",
                       "source_channel": "api", **fields})
        session.add(lead)
        await session.commit()
        return lead.id


# --- templates -----------------------------------------------------------------------------------


async def test_marketer_saves_reads_updates_and_archives_a_template(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    created = await save(client, marketer)
    assert (created["key"], created["version"], created["channel"], created["kind"]) == (
        "welcome", 1, "email", "marketing")
    assert created["topic"] == "news" and created["locale"] == "ru" and created["segments"] is None

    read = await client.get("/v1/templates/welcome", headers=marketer)
    assert read.status_code == 200 and read.json()["body"] == BODY

    changed = await client.put("/v1/templates/welcome", headers=marketer, json={
        "name": "Приветствие", "subject": "Добро пожаловать!", "body": BODY, "topic": "news",
    })
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2 and changed.json()["subject"] == "Добро пожаловать!"
    assert changed.json()["preheader"] == ""  # a full replace: what was left out takes its default

    to_sms = await client.put("/v1/templates/welcome", headers=marketer, json={
        "name": "SMS", "channel": "sms", "body": "Привет",
    })
    assert to_sms.status_code == 422 and to_sms.json()["error"]["field"] == "channel"
    assert (await client.get("/v1/templates/welcome", headers=marketer)).json()["version"] == 2

    archived = await client.delete("/v1/templates/welcome", headers=marketer)
    assert archived.status_code == 204
    assert (await client.get("/v1/templates", headers=marketer)).json() == []
    everything = (await client.get("/v1/templates", params={"archived": "true"}, headers=marketer)).json()
    assert [t["key"] for t in everything] == ["welcome"] and everything[0]["archived_at"] is not None
    again = await client.put("/v1/templates/welcome", headers=marketer, json={"name": "x", "body": BODY})
    assert again.status_code == 409
    reused = await client.post("/v1/templates", json=email_template(), headers=marketer)
    assert reused.status_code == 409 and "archived" in reused.json()["error"]["message"]


async def test_a_jinja_syntax_error_gets_422_with_its_line_and_nothing_is_saved(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    broken = BODY.replace("{{ lead.first_name }}!", "{{ lead.first_name | }}!")
    resp = await client.post("/v1/templates", json=email_template(body=broken), headers=marketer)

    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["field"] == "body"
    assert error["details"][0]["field"] == "body" and error["details"][0]["line"] == GREETING_LINE
    assert f"line {GREETING_LINE}" in error["message"]
    assert (await client.get("/v1/templates", params={"archived": "true"}, headers=marketer)).json() == []


async def test_an_unknown_variable_gets_422_with_a_suggestion(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    resp = await client.post("/v1/templates", headers=marketer,
                             json=email_template(subject="{{ lead.frist_name }}, привет"))

    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["field"] == "subject" and error["details"][0]["line"] == 1
    assert "did you mean 'lead.first_name'" in error["details"][0]["message"]


async def test_every_problem_is_listed_not_only_the_first(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    resp = await client.post("/v1/templates", headers=marketer, json=email_template(
        subject="{{ lead.frist_name }}", body=BODY.replace("lead.company", "lead.compnay")))

    assert resp.status_code == 422
    assert {(d["field"], d["line"]) for d in resp.json()["error"]["details"]} == {("subject", 1),
                                                                                 ("body", GREETING_LINE)}


async def test_a_marketing_email_without_an_unsubscribe_link_is_refused_a_transactional_one_is_not(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    no_link = BODY.replace("{{ unsubscribe_url }}", "https://example.com/contacts")

    marketing = await client.post("/v1/templates", json=email_template(body=no_link), headers=marketer)
    assert marketing.status_code == 422
    assert marketing.json()["error"]["field"] == "body" and "unsubscribe" in marketing.json()["error"]["message"]

    receipt = await client.post("/v1/templates", json=email_template(body=no_link, kind="transactional"),
                                headers=marketer)
    assert receipt.status_code == 201, receipt.text


async def test_a_second_template_with_the_same_key_gets_409(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    await save(client, marketer)
    again = await client.post("/v1/templates", json=email_template(name="Другое"), headers=marketer)
    assert again.status_code == 409 and again.json()["error"]["field"] == "key"


@pytest.mark.parametrize("key", ["system:optin:ru", "не-слаг", "", "a" * 101, "starters", "-x"])
async def test_keys_that_are_not_slugs_or_are_reserved_get_422(
    client: httpx.AsyncClient, marketer: dict[str, str], key: str
) -> None:
    resp = await client.post("/v1/templates", json=email_template(key=key), headers=marketer)
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "key"


async def test_templates_need_the_right_scope(client: httpx.AsyncClient, db: Database) -> None:
    reader = {"authorization": f"Bearer {await make_key(db, 'leads:read')}"}
    designer = {"authorization": f"Bearer {await make_key(db, 'forms:write')}"}
    importer = {"authorization": f"Bearer {await make_key(db, 'import')}"}
    lead_id = await add_lead(db)

    assert (await client.post("/v1/templates", json=email_template(), headers=reader)).status_code == 403
    assert (await client.get("/v1/templates", headers=importer)).status_code == 403
    assert (await client.get("/v1/templates")).status_code == 401
    assert (await client.post("/v1/templates", json=email_template(), headers=designer)).status_code == 201
    assert (await client.get("/v1/templates/welcome", headers=reader)).status_code == 200
    assert (await client.delete("/v1/templates/welcome", headers=reader)).status_code == 403
    # A preview with a lead shows the lead's data: leads:read it is.
    with_lead = await client.post("/v1/templates/welcome/preview", json={"lead_id": str(lead_id)}, headers=designer)
    assert with_lead.status_code == 403
    assert (await client.post("/v1/templates/welcome/preview", json={}, headers=designer)).status_code == 200


async def test_starters_are_offered_and_one_becomes_a_saved_template(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    offered = (await client.get("/v1/templates/starters", headers=marketer)).json()
    assert {(s["name"], s["locale"]) for s in offered} == {
        ("welcome", "ru"), ("welcome", "en"), ("webinar", "ru"), ("webinar", "en")}

    made = await client.post("/v1/templates/from-starter", headers=marketer, json={
        "starter": "webinar", "locale": "en", "key": "webinar-april", "name": "April webinar"})
    assert made.status_code == 201, made.text
    webinar_en = next(s for s in offered if (s["name"], s["locale"]) == ("webinar", "en"))
    assert made.json()["body"] == webinar_en["body"] and made.json()["locale"] == "en"

    unknown = await client.post("/v1/templates/from-starter", headers=marketer, json={
        "starter": "blackfriday", "key": "bf", "name": "BF"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "starter"


# --- previews ------------------------------------------------------------------------------------


async def test_preview_with_a_real_lead_shows_the_leads_data_and_links_as_written(
    client: httpx.AsyncClient, marketer: dict[str, str], db: Database
) -> None:
    await save(client, marketer)
    lead_id = await add_lead(db)

    resp = await client.post("/v1/templates/welcome/preview", json={"lead_id": str(lead_id)}, headers=marketer)

    assert resp.status_code == 200, resp.text
    shown = resp.json()
    assert shown["subject"] == "Светлана, добро пожаловать"
    assert "Здравствуйте, Светлана! Компания: Ромашка" in shown["html"]
    assert "Здравствуйте, Светлана!" in shown["text"]
    assert shown["preheader"] == "Коротко о главном"
    assert shown["links"] == [{"url": "https://example.com/offer", "tag": "offer"}]
    assert "/t/c/" not in shown["html"] and "segments" not in shown


async def test_preview_with_the_sample_lead_in_either_language_and_context_merged_over(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    await save(client, marketer)

    ru = (await client.post("/v1/templates/welcome/preview", json={}, headers=marketer)).json()
    en = (await client.post("/v1/templates/welcome/preview", json={"locale": "en"}, headers=marketer)).json()
    changed = (await client.post("/v1/templates/welcome/preview", headers=marketer,
                                 json={"context": {"lead": {"first_name": "Пётр"}}})).json()

    assert ru["subject"] == "Анна, добро пожаловать"
    assert en["subject"] == "Anna, добро пожаловать"
    assert changed["subject"] == "Пётр, добро пожаловать"
    assert "Компания: ООО «Северсталь-Инжиниринг»" in changed["text"]  # the rest of the sample lead stays


async def test_a_value_that_breaks_the_template_in_a_preview_gets_422_naming_field_and_line(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    await save(client, marketer, body=BODY.replace("Компания: {{ lead.company }}", "Баллы: {{ score + 1 }}"))

    resp = await client.post("/v1/templates/welcome/preview", json={"context": {"score": "много"}},
                             headers=marketer)

    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["field"] == "body" and error["details"]["line"] == GREETING_LINE


async def test_sms_templates_count_segments_cyrillic_in_ucs2_70_a_segment(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    one = await save(client, marketer, key="sms-70", channel="sms", subject="", preheader="", body="Я" * 70)
    two = await save(client, marketer, key="sms-71", channel="sms", subject="", preheader="", body="Я" * 71)
    latin = await save(client, marketer, key="sms-latin", channel="sms", subject="", preheader="", body="a" * 160)

    assert one["segments"] == {"encoding": "UCS-2", "characters": 70, "segments": 1, "per_segment": 70}
    assert two["segments"] == {"encoding": "UCS-2", "characters": 71, "segments": 2, "per_segment": 67}
    assert latin["segments"] == {"encoding": "GSM-7", "characters": 160, "segments": 1, "per_segment": 160}

    await save(client, marketer, key="sms-name", channel="sms", subject="", preheader="",
               body="{{ lead.first_name }}, ваша скидка 20% действует до пятницы.")
    preview = await client.post("/v1/templates/sms-name/preview", json={}, headers=marketer)
    assert preview.json() == {
        "text": "Анна, ваша скидка 20% действует до пятницы.",
        "segments": {"encoding": "UCS-2", "characters": 43, "segments": 1, "per_segment": 70},
    }


async def test_a_text_template_with_a_jinja_error_names_the_body_and_line(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    resp = await client.post("/v1/templates", headers=marketer, json=email_template(
        key="sms", channel="sms", body="Здравствуйте!\n{% if lead.first_name %}{{ lead.first_name }}"))
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "body" and resp.json()["error"]["details"][0]["line"] == 2


# --- test sends and the captured outbox ----------------------------------------------------------


async def test_a_test_send_is_queued_sent_and_shows_in_the_captured_outbox(
    client: httpx.AsyncClient, marketer: dict[str, str], db: Database, settings: Settings, frozen_now: datetime
) -> None:
    await save(client, marketer)
    lead_id = await add_lead(db)

    queued = await client.post("/v1/templates/welcome/test", headers=marketer,
                               json={"to": "Tester@Example.RU", "lead_id": str(lead_id)})
    other = await client.post("/v1/templates/welcome/test", headers=marketer, json={"to": "boss@example.ru"})

    assert queued.status_code == 202, queued.text
    async with db.sessions() as session:
        row = await session.get(Message, uuid.UUID(queued.json()["message_id"]))
    assert row is not None
    assert (row.channel, row.kind, row.template, row.recipient, row.lead_id, row.state) == (
        "email", "transactional", "welcome", "tester@example.ru", lead_id, "queued")
    assert row.idempotency_key.startswith("test:")

    sender = build_sender(db, settings)
    try:
        await sender.send_due()
    finally:
        await sender.close()

    listed = await client.get("/v1/outbox/messages", params={"to": "tester@example.ru"}, headers=marketer)
    assert listed.status_code == 200, listed.text
    [mail] = listed.json()["items"]
    assert mail["message_id"] == queued.json()["message_id"] and mail["subject"] == "Светлана, добро пожаловать"
    everything = (await client.get("/v1/outbox/messages", headers=marketer)).json()["items"]
    assert [m["message_id"] for m in everything] == [other.json()["message_id"], queued.json()["message_id"]]

    detail = (await client.get(f"/v1/outbox/messages/{mail['id']}", headers=marketer)).json()
    assert detail["subject"] == "Светлана, добро пожаловать"
    assert "Здравствуйте, Светлана! Компания: Ромашка" in detail["text"]
    assert "Здравствуйте, Светлана!" in detail["html"]
    assert f"{settings.base_url}/u/" in detail["text"]  # the sender gave the unsubscribe link
    assert any(name == "To" and "tester@example.ru" in value for name, value in detail["headers"])

    raw = await client.get(f"/v1/outbox/messages/{mail['id']}/raw", headers=marketer)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("message/rfc822")
    assert b"Message-ID:" in raw.content or b"Message-Id:" in raw.content
    assert (await client.get(f"/v1/outbox/messages/{uuid.uuid4()}", headers=marketer)).status_code == 404


async def test_a_test_send_to_a_bad_address_gets_422_and_queues_nothing(
    client: httpx.AsyncClient, marketer: dict[str, str], db: Database
) -> None:
    await save(client, marketer)

    resp = await client.post("/v1/templates/welcome/test", json={"to": "not an address"}, headers=marketer)

    assert resp.status_code == 422 and resp.json()["error"]["field"] == "to"
    async with db.sessions() as session:
        assert list(await session.scalars(select(Message))) == []


# --- the ledger ----------------------------------------------------------------------------------


async def test_messages_list_filters_and_pages_newest_first(
    client: httpx.AsyncClient, marketer: dict[str, str], db: Database
) -> None:
    anna, boris = await add_lead(db, email="anna@example.ru"), await add_lead(db, email="boris@example.ru")
    specs = [
        ("k1", "email", anna, "spring"), ("k2", "email", boris, "spring"),
        ("k3", "sms", anna, "autumn"), ("k4", "email", anna, None),
    ]
    ids = {}
    async with db.sessions() as session:
        for key, channel, lead_id, campaign in specs:
            ids[key], _ = await queue_message(session, Outgoing(
                key=key, channel=channel, recipient="+79123456789" if channel == "sms" else "a@example.ru",
                lead_id=lead_id, template="welcome", campaign=campaign))
        await session.execute(update(Message).where(Message.id == ids["k2"])
                              .values(state="failed", reason="550 no such user"))
        await session.commit()

    async def keys(**params: Any) -> list[str]:
        resp = await client.get("/v1/messages", params=params, headers=marketer)
        assert resp.status_code == 200, resp.text
        return [m["idempotency_key"] for m in resp.json()["items"]]

    assert await keys() == ["k4", "k3", "k2", "k1"]
    assert await keys(lead_id=str(anna)) == ["k4", "k3", "k1"]
    assert await keys(state="failed") == ["k2"]
    assert await keys(channel="sms") == ["k3"]
    assert await keys(campaign="spring") == ["k2", "k1"]
    assert await keys(campaign="spring", lead_id=str(anna)) == ["k1"]

    seen, cursor = [], None
    for _ in range(len(specs) + 1):  # a cursor that never ends must fail the test, not hang it
        page = (await client.get("/v1/messages", params={"limit": 1, **({"cursor": cursor} if cursor else {})},
                                 headers=marketer)).json()
        seen += [m["idempotency_key"] for m in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == ["k4", "k3", "k2", "k1"] and cursor is None

    one = (await client.get(f"/v1/messages/{ids['k2']}", headers=marketer)).json()
    assert (one["state"], one["reason"], one["campaign"], one["lead_id"]) == (
        "failed", "550 no such user", "spring", str(boris))

    assert (await client.get("/v1/messages", params={"state": "lost"}, headers=marketer)).json()["error"][
        "field"] == "state"
    assert (await client.get("/v1/messages", params={"cursor": "nonsense"}, headers=marketer)).json()["error"][
        "field"] == "cursor"
    assert (await client.get("/v1/messages", params={"limit": 101}, headers=marketer)).json()["error"][
        "field"] == "limit"
    assert (await client.get(f"/v1/messages/{uuid.uuid4()}", headers=marketer)).status_code == 404


# --- suppressions --------------------------------------------------------------------------------


async def test_manual_suppressions_are_normalised_listed_and_lifted(
    client: httpx.AsyncClient, marketer: dict[str, str], db: Database
) -> None:
    lead_id = await add_lead(db, email="ivan@example.ru")

    made = await client.post("/v1/suppressions", headers=marketer,
                             json={"channel": "email", "address": " Ivan@Example.RU ", "detail": "просил по телефону"})
    again = await client.post("/v1/suppressions", headers=marketer,
                              json={"channel": "email", "address": "ivan@example.ru"})
    phone = await client.post("/v1/suppressions", headers=marketer,
                              json={"channel": "sms", "address": "+7 912 345-67-89", "topic": "promo"})

    assert made.status_code == 201, made.text
    assert made.json()["address"] == "ivan@example.ru" and made.json()["reason"] == "manual"
    assert made.json()["topic"] == "" and made.json()["lead_id"] == str(lead_id)
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
    assert phone.status_code == 201 and phone.json()["address"] == "+79123456789"

    listed = (await client.get("/v1/suppressions", headers=marketer)).json()["items"]
    assert [s["address"] for s in listed] == ["+79123456789", "ivan@example.ru"]
    by_address = (await client.get("/v1/suppressions", params={"channel": "email", "address": "IVAN@example.ru"},
                                   headers=marketer)).json()["items"]
    assert [s["id"] for s in by_address] == [made.json()["id"]]

    lifted = await client.delete(f"/v1/suppressions/{made.json()['id']}", headers=marketer)
    assert lifted.status_code == 204
    async with db.sessions() as session:
        assert [s.address for s in await session.scalars(select(Suppression))] == ["+79123456789"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "email", "address": "not-an-address"}, "address"),
        ({"channel": "sms", "address": "8 912 345-67-89"}, "address"),  # no country code: not E.164
        ({"channel": "sms", "address": "+7 000"}, "address"),
        ({"channel": "fax", "address": "x"}, "channel"),
        ({"channel": "email", "address": "a@example.ru", "reason": "annoyed"}, "reason"),
        ({"channel": "email", "address": "a@example.ru", "topic": "не слаг"}, "topic"),
        ({"channel": "email", "address": "a@example.ru", "detail": "nul\x00"}, "detail"),
    ],
)
async def test_a_bad_suppression_gets_422_naming_the_field_and_nothing_is_written(
    client: httpx.AsyncClient, marketer: dict[str, str], db: Database, body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/suppressions", json=body, headers=marketer)

    assert resp.status_code == 422 and resp.json()["error"]["field"] == field
    async with db.sessions() as session:
        assert list(await session.scalars(select(Suppression))) == []


async def test_only_an_admin_lifts_a_hard_bounce(
    client: httpx.AsyncClient, marketer: dict[str, str], admin_headers: dict[str, str], db: Database
) -> None:
    async with db.sessions() as session:
        bounce = Suppression(channel="email", address="gone@example.ru", topic="", reason="hard_bounce",
                             created_at=clock.now())
        session.add(bounce)
        await session.commit()

    refused = await client.delete(f"/v1/suppressions/{bounce.id}", headers=marketer)
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "reason"
    async with db.sessions() as session:
        assert await session.get(Suppression, bounce.id) is not None

    assert (await client.delete(f"/v1/suppressions/{bounce.id}", headers=admin_headers)).status_code == 204
    assert (await client.delete(f"/v1/suppressions/{bounce.id}", headers=admin_headers)).status_code == 404


async def test_a_template_saved_through_the_api_is_what_the_sender_reads(
    client: httpx.AsyncClient, marketer: dict[str, str], db: Database
) -> None:
    await save(client, marketer, key="news.april", topic="news")
    async with db.sessions() as session:
        stored = await session.scalar(select(Template).where(Template.key == "news.april"))
    assert stored is not None and stored.topic == "news" and stored.body == BODY and stored.version == 1
