"""Web forms: definitions API, and what a website sees when it posts a form."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import event, func, select, update

from core import clock
from core.db import Database
from core.errors import Invalid, NotFound
from core.outbox import OutboxEvent
from core.settings import Settings
from core.web import parse_urlencoded
from leads.models import Activity, Consent, CustomField, Form, Lead, Touchpoint
from tests.conftest import make_key

CONSENT = "Согласен на обработку персональных данных / I agree to the processing of my data"


def contact_form(**overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "key": "contact",
        "name": "Заявка",
        "fields": [
            {"name": "first_name", "label": "Имя", "type": "text", "required": True},
            {"name": "email", "label": "Эл. почта", "type": "email", "required": True},
            {"name": "phone", "label": "Телефон", "type": "phone"},
            {"name": "topic", "label": "Тема", "type": "select", "choices": ["Цены", "Демо"]},
        ],
        "consent": {"purpose": "marketing_email", "wording": CONSENT, "required": True},
        "success_url": "https://example.ru/spasibo",
        "default_campaign": "site-form",
        "tags": ["site"],
    }
    form.update(overrides)
    return form


async def make_form(client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    resp = await client.post("/v1/forms", json=contact_form(**overrides), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def count(db: Database, model: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def the_lead(db: Database) -> Lead:
    async with db.sessions() as session:
        leads = list(await session.scalars(select(Lead)))
    assert len(leads) == 1
    return leads[0]


GOOD = {"first_name": "Мария", "email": "Maria@Example.RU", "phone": "8 912 345-67-89", "consent": "on"}
JSON_ACCEPT = {"accept": "application/json"}


# --- definitions ---------------------------------------------------------------------------


async def test_marketer_creates_lists_updates_and_archives_a_form(
    client: httpx.AsyncClient, db: Database
) -> None:
    headers = {"authorization": f"Bearer {await make_key(db, 'forms:write')}"}
    created = await make_form(client, headers)
    assert created["submit_url"] == "/v1/forms/contact/submit"
    assert created["fields"][1]["lead_field"] == "email"  # named like a profile field: mapped
    assert created["fields"][3]["choices"][0] == {"value": "Цены", "label": "Цены"}

    listed = await client.get("/v1/forms", headers=headers)
    assert [f["key"] for f in listed.json()] == ["contact"]

    changed = await client.patch("/v1/forms/contact", json={"default_campaign": "spring"}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["default_campaign"] == "spring"
    assert changed.json()["fields"] == created["fields"]

    archived = await client.post("/v1/forms/contact/archive", headers=headers)
    assert archived.json()["archived_at"] is not None
    assert (await client.get("/v1/forms", headers=headers)).json() == []
    assert (await client.get("/v1/forms/contact", headers=headers)).status_code == 200
    post = await client.post("/v1/forms/contact/submit", json=GOOD)
    assert post.status_code == 404


async def test_second_form_with_the_same_key_gets_409(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    await make_form(client, admin_headers)
    again = await client.post("/v1/forms", json=contact_form(), headers=admin_headers)
    assert again.status_code == 409
    assert again.json()["error"]["field"] == "key"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": "Не слаг"}, "key"),
        ({"success_url": "javascript:alert(1)"}, "success_url"),
        ({"success_url": "//evil.example/"}, "success_url"),
        ({"allowed_origins": ["https://example.ru/path"]}, "allowed_origins"),
        ({"default_region": "XX"}, "default_region"),
        ({"fields": [{"name": "email", "label": "E", "type": "select"}]}, "fields.0"),
        ({"fields": [{"name": "email", "label": "E", "type": "colour"}]}, "fields.0.type"),
        ({"fields": [{"name": "x", "label": "X", "lead_field": "password"}]}, "fields.0.lead_field"),
        ({"fields": [{"name": "consent", "label": "C", "type": "checkbox"}]}, "fields.0.name"),
        ({"fields": [{"name": "note", "label": "Заметка"}]}, "fields"),
        ({"fields": [{"name": "email", "label": "E", "type": "email"},
                     {"name": "email2", "label": "E2", "type": "email", "lead_field": "email"}]},
         "fields.1.lead_field"),
        ({"fields": [{"name": "email", "label": "E", "type": "email"},
                     {"name": "budget", "label": "B", "lead_field": "custom.budget"}]}, "fields.1.lead_field"),
        ({"honeypot_field": "email"}, "honeypot_field"),
        ({"name": "Форма\x00"}, "name"),
        ({"double_opt_in": True, "consent": None}, "double_opt_in"),
    ],
)
async def test_bad_form_definition_gets_422_naming_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, overrides: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/forms", json=contact_form(**overrides), headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


async def test_bad_update_gets_422_and_leaves_the_form_as_it_was(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await make_form(client, admin_headers)
    resp = await client.patch("/v1/forms/contact", json={"error_url": "ftp://x"}, headers=admin_headers)
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "error_url"
    assert (await client.get("/v1/forms/contact", headers=admin_headers)).json()["error_url"] is None


async def test_forms_api_needs_the_forms_scope(client: httpx.AsyncClient, db: Database) -> None:
    assert (await client.get("/v1/forms")).status_code == 401
    reader = {"authorization": f"Bearer {await make_key(db, 'leads:read')}"}
    assert (await client.post("/v1/forms", json=contact_form(), headers=reader)).status_code == 403


# --- submitting ------------------------------------------------------------------------------


async def test_json_post_creates_a_lead_with_utm_consent_tags_and_events(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, frozen_now: Any
) -> None:
    await make_form(client, admin_headers)
    body = {**GOOD, "topic": "Демо", "utm_source": "yandex", "utm_medium": "cpc", "_vid": "visitor-0001",
            "_page": "https://example.ru/landing", "_referrer": "https://ya.ru/"}
    resp = await client.post("/v1/forms/contact/submit", json=body)
    assert resp.status_code == 201, resp.text
    lead = await the_lead(db)
    assert resp.json() == {"lead_id": str(lead.id)}
    assert (lead.email, lead.phone, lead.first_name) == ("maria@example.ru", "+79123456789", "Мария")
    assert [t.tag for t in lead.tags] == ["site"]
    async with db.sessions() as session:
        touch = await session.scalar(select(Touchpoint))
        activity = await session.scalar(select(Activity))
        consent = await session.scalar(select(Consent))
        events = list(await session.scalars(select(OutboxEvent.name)))
    assert touch is not None and activity is not None and consent is not None
    assert (touch.channel, touch.source, touch.medium, touch.campaign) == ("form", "yandex", "cpc", "site-form")
    assert (touch.landing_page, touch.referrer, touch.visitor_id) == (
        "https://example.ru/landing", "https://ya.ru/", "visitor-0001")
    assert activity.type == "form_submitted"
    assert activity.data["form"] == "contact" and activity.data["values"] == {"topic": "Демо"}
    assert (consent.purpose, consent.granted, consent.wording, consent.ip) == (
        "marketing_email", True, CONSENT, "203.0.113.7")
    assert sorted(events) == ["lead.activity", "lead.created"]


async def test_browser_post_gets_303_to_success_url_with_utm_from_the_page(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers)
    resp = await client.post(
        "/v1/forms/contact/submit",
        content="first_name=%D0%9F%D1%91%D1%82%D1%80&email=petr%40example.ru&consent=on&topic=",
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html",
                 "referer": "https://example.ru/promo?utm_source=vk&utm_campaign=spring",
                 "cookie": "nurture_vid=cookie-visitor-42"},
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "https://example.ru/spasibo"
    lead = await the_lead(db)
    assert lead.first_name == "Пётр"
    async with db.sessions() as session:
        touch = await session.scalar(select(Touchpoint))
    assert touch is not None
    assert (touch.source, touch.campaign, touch.visitor_id) == ("vk", "spring", "cookie-visitor-42")
    assert touch.landing_page == "https://example.ru/promo?utm_source=vk&utm_campaign=spring"


async def test_windows_1251_post_from_an_old_site_keeps_cyrillic(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers)
    body = urlencode({"first_name": "Фёдор", "email": "f@example.ru", "consent": "on"}, encoding="cp1251")
    resp = await client.post(
        "/v1/forms/contact/submit", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 303
    assert (await the_lead(db)).first_name == "Фёдор"


async def test_multipart_post_creates_a_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers)
    resp = await client.post(
        "/v1/forms/contact/submit", data={**GOOD, "topic": "Цены"}, files={"ignored": ("a.txt", b"x")},
        headers=JSON_ACCEPT,
    )
    assert resp.status_code == 201, resp.text
    assert (await the_lead(db)).email == "maria@example.ru"


async def test_form_without_success_url_thanks_in_russian_and_english(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await make_form(client, admin_headers, success_url=None)
    resp = await client.post("/v1/forms/contact/submit", data=GOOD)
    assert resp.status_code == 303 and resp.headers["location"] == "/v1/forms/contact/thanks"
    page = await client.get(resp.headers["location"])
    assert page.status_code == 200
    assert "Спасибо" in page.text and "Thank you" in page.text


async def test_honeypot_post_looks_successful_but_makes_no_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers)
    browser = await client.post("/v1/forms/contact/submit", data={**GOOD, "website_url": "http://spam.example"})
    assert browser.status_code == 303 and browser.headers["location"] == "https://example.ru/spasibo"
    api = await client.post("/v1/forms/contact/submit", json={**GOOD, "website_url": "x"})
    assert api.status_code == 201 and "lead_id" in api.json()
    assert await count(db, Lead) == 0
    assert await count(db, Activity) == 0
    assert await count(db, OutboxEvent) == 0


async def test_form_post_without_email_gets_422_and_no_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers)
    resp = await client.post("/v1/forms/contact/submit", json={"first_name": "Иван", "consent": True})
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "email"
    bad = await client.post("/v1/forms/contact/submit", json={**GOOD, "email": "не-почта"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "email"
    assert await count(db, Lead) == 0
    assert await count(db, OutboxEvent) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"consent": ""}, "consent"),
        ({"phone": "12"}, "phone"),
        ({"topic": "Другое"}, "topic"),
        ({"first_name": "   "}, "first_name"),
        ({"first_name": ["a", "b"]}, "first_name"),
        ({"first_name": "я" * 1001}, "first_name"),
        ({"first_name": "Ив\x00ан"}, "first_name"),
        ({"email": "iv\x00an@example.ru"}, "email"),
    ],
)
async def test_bad_value_gets_422_naming_the_form_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, change: dict[str, Any], field: str
) -> None:
    await make_form(client, admin_headers)
    resp = await client.post("/v1/forms/contact/submit", json={**GOOD, **change})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert await count(db, Lead) == 0


async def test_browser_with_bad_value_goes_back_to_error_url_or_sees_a_page_naming_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await make_form(client, admin_headers, key="with-error-url", error_url="https://example.ru/form?step=2")
    redirected = await client.post("/v1/forms/with-error-url/submit", data={**GOOD, "email": "nope"})
    assert redirected.status_code == 303
    assert redirected.headers["location"] == (
        "https://example.ru/form?step=2&nurture_error=email&nurture_form=with-error-url")

    await make_form(client, admin_headers)
    page = await client.post("/v1/forms/contact/submit", data={**GOOD, "email": "nope"})
    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    assert "Эл. почта" in page.text and "Back to the form" in page.text


async def test_custom_field_values_are_checked_and_stored(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    async with db.sessions() as session:
        session.add(CustomField(key="budget", label="Бюджет", type="integer", min_value=0))
        await session.commit()
    fields = [{"name": "email", "label": "Email", "type": "email", "required": True},
              {"name": "budget", "label": "Бюджет, ₽", "type": "number", "lead_field": "custom.budget"}]
    await make_form(client, admin_headers, fields=fields, consent=None)
    bad = await client.post("/v1/forms/contact/submit", json={"email": "a@example.ru", "budget": "-5"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "budget"
    good = await client.post("/v1/forms/contact/submit", json={"email": "a@example.ru", "budget": "150 000"})
    assert good.status_code == 201, good.text
    assert (await the_lead(db)).custom == {"budget": 150000}


async def test_double_opt_in_records_pending_consent_and_asks_for_confirmation_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers, double_opt_in=True)
    assert (await client.post("/v1/forms/contact/submit", json=GOOD)).status_code == 201
    async with db.sessions() as session:
        consent = await session.scalar(select(Consent))
        asked = list(await session.scalars(select(OutboxEvent).where(OutboxEvent.name == "lead.optin_requested")))
    assert consent is not None and (consent.granted, consent.wording) == (False, CONSENT)
    lead = await the_lead(db)
    # Ids only: the email channel loads the address, so an erased person's stays nowhere.
    assert len(asked) == 1 and asked[0].payload == {
        "lead_id": str(lead.id), "purpose": "marketing_email", "form": "contact", "consent_id": str(consent.id)
    }

    # The visitor confirmed (the email channel records it); a later post does not ask again.
    async with db.sessions() as session:
        session.add(Consent(lead_id=lead.id, purpose="marketing_email", granted=True, source="email",
                            occurred_at=clock.now() + timedelta(seconds=1)))
        await session.commit()
    assert (await client.post("/v1/forms/contact/submit", json=GOOD)).status_code == 201
    async with db.sessions() as session:
        names = list(await session.scalars(select(OutboxEvent.name)))
        pending = await session.scalar(select(func.count()).select_from(Consent).where(Consent.granted.is_(False)))
    assert names.count("lead.optin_requested") == 1 and pending == 1


async def test_lone_surrogates_in_page_referrer_and_utm_are_repaired_and_the_lead_is_kept(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    # What a broken tracking script sends: JSON escapes of half a character, and a NUL.
    await make_form(client, admin_headers)
    body = (
        '{"first_name": "Мария", "email": "maria@example.ru", "consent": "on",'
        ' "_page": "https://example.ru/\\ud83d?utm_term=x", "_referrer": "https://ya.ru/\\udfff\\u0000",'
        ' "utm_source": "ya\\ud800ndex", "utm_campaign": "весна\\udc00"}'
    ).encode()
    resp = await client.post("/v1/forms/contact/submit", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 201, resp.text
    async with db.sessions() as session:
        touch = await session.scalar(select(Touchpoint))
        activity = await session.scalar(select(Activity))
    assert touch is not None and activity is not None
    assert (touch.landing_page, touch.referrer) == ("https://example.ru/??utm_term=x", "https://ya.ru/?")
    assert (touch.source, touch.campaign) == ("ya?ndex", "весна?")
    assert activity.data["utm"] == {"utm_source": "ya?ndex", "utm_campaign": "весна?"}


async def test_typed_value_with_a_lone_surrogate_gets_422_naming_the_posted_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    fields = [*contact_form()["fields"], {"name": "comment", "label": "Комментарий", "type": "textarea"}]
    await make_form(client, admin_headers, fields=fields)
    for name in ("comment", "first_name"):
        body = json.dumps({**GOOD, name: "Добрый день\ud800"}).encode()  # sent as the escape \\ud800
        resp = await client.post("/v1/forms/contact/submit", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == name
    assert await count(db, Lead) == 0


async def test_form_post_that_fails_after_the_lead_is_written_leaves_nothing_and_gets_no_2xx(
    app: Any, admin_headers: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import leads.intake.batch.writer
    import leads.intake.submissions

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the outbox is unavailable")

    insert_rows = leads.intake.batch.writer.insert_rows

    async def broken_outbox(session: Any, tables: Any) -> None:
        if any(table.name == "outbox_events" for table, _ in tables):
            broken()
        await insert_rows(session, tables)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        await make_form(http, admin_headers, double_opt_in=True)
        # The opt-in request is written last: lead, touchpoint, activity, consent and the lead
        # events are all in the transaction when it fails.
        # Both ways of writing a post: grouped (the outbox rows come last) and alone.
        monkeypatch.setattr(leads.intake.batch.writer, "insert_rows", broken_outbox)
        monkeypatch.setattr(leads.intake.submissions, "emit", broken)
        browser = await http.post("/v1/forms/contact/submit", data=GOOD)
        script = await http.post("/v1/forms/contact/submit", json=GOOD)
    assert browser.status_code >= 500 and script.status_code >= 500
    for table in (Lead, Touchpoint, Activity, Consent, OutboxEvent):
        assert await count(db, table) == 0, table


def test_tracker_and_embed_scripts_ship_inside_the_leads_package() -> None:
    # leads must not read files of app (the map: app imports leads, never the other way).
    import tomllib
    from importlib.resources import files
    from pathlib import Path

    static = files("leads") / "static"
    assert (static / "t.js").is_file() and (static / "embed.js").is_file()
    root = Path(__file__).resolve().parents[2]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(pattern.startswith("static/") for pattern in package_data.get("leads", []))
    for module in (root / "leads").rglob("*.py"):
        assert '"app"' not in module.read_text(encoding="utf-8"), module


async def test_tracker_and_embed_scripts_are_served(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    from importlib.resources import files

    await make_form(client, admin_headers)
    tracker = await client.get("/t.js")
    assert tracker.status_code == 200 and tracker.text == (files("leads") / "static" / "t.js").read_text("utf-8")
    embed = await client.get("/v1/forms/contact/embed.js")
    assert embed.status_code == 200 and '"key": "contact"' in embed.text


# --- refusals ---------------------------------------------------------------------------------


async def test_unknown_form_is_404(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/forms/nope/submit", json=GOOD)
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "form_key"


async def test_other_content_types_get_415(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    await make_form(client, admin_headers)
    resp = await client.post("/v1/forms/contact/submit", content=b"<xml/>", headers={"content-type": "text/xml"})
    assert resp.status_code == 415


async def test_body_over_the_limit_gets_413_and_no_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, db: Database
) -> None:
    await make_form(client, admin_headers)
    settings.max_form_bytes = 2000
    resp = await client.post("/v1/forms/contact/submit", json={**GOOD, "topic": "x" * 3000})
    assert resp.status_code == 413
    assert await count(db, Lead) == 0


async def test_post_from_an_origin_the_form_does_not_allow_gets_403(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers, allowed_origins=["https://Example.ru:443"])
    evil = await client.post("/v1/forms/contact/submit", json=GOOD, headers={"origin": "https://evil.example"})
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
    by_referer = await client.post("/v1/forms/contact/submit", data=GOOD, headers={"referer": "https://evil.example/x"})
    assert by_referer.status_code == 403
    assert await count(db, Lead) == 0

    ok = await client.post("/v1/forms/contact/submit", json=GOOD, headers={"origin": "https://example.ru"})
    assert ok.status_code == 201
    assert ok.headers["access-control-allow-origin"] == "https://example.ru"
    invalid = await client.post("/v1/forms/contact/submit", json={**GOOD, "email": "x"},
                                headers={"origin": "https://example.ru"})
    assert invalid.status_code == 422  # the site's script can read the error to show it
    assert invalid.headers["access-control-allow-origin"] == "https://example.ru"


async def test_preflight_is_answered_only_for_allowed_origins(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await make_form(client, admin_headers, allowed_origins=["https://example.ru"])
    ask = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    ok = await client.options("/v1/forms/contact/submit", headers={**ask, "origin": "https://example.ru"})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == "https://example.ru"
    assert "POST" in ok.headers["access-control-allow-methods"]
    no = await client.options("/v1/forms/contact/submit", headers={**ask, "origin": "https://evil.example"})
    assert no.status_code == 403 and "access-control-allow-origin" not in no.headers


async def test_too_many_posts_from_one_address_get_429_until_the_minute_passes(
    client: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings, frozen_now: Any
) -> None:
    await make_form(client, admin_headers)
    settings.form_rate_limit = 3
    for _ in range(3):
        assert (await client.post("/v1/forms/contact/submit", json=GOOD)).status_code == 201
    refused = await client.post("/v1/forms/contact/submit", json=GOOD)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    clock.advance(timedelta(seconds=61))
    assert (await client.post("/v1/forms/contact/submit", json=GOOD)).status_code == 201


# --- embed ------------------------------------------------------------------------------------


async def test_embed_script_carries_the_form_and_cannot_break_out_of_a_script_tag(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    fields = contact_form()["fields"]
    fields[0]["label"] = "Имя</script><script>alert(1)</script>"
    await make_form(client, admin_headers, fields=fields)
    resp = await client.get("/v1/forms/contact/embed.js")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/javascript")
    assert "</script>" not in resp.text.split("*/", 1)[1]
    literal = resp.text.split("var form = ", 1)[1].split(";\n", 1)[0]
    config = json.loads(literal)
    assert config["fields"][0]["label"] == "Имя</script><script>alert(1)</script>"
    assert config["honeypot"] == "website_url" and config["consent"]["wording"] == CONSENT
    assert "fetch(" in resp.text and "_vid" in resp.text and "utm_source" in resp.text
    assert (await client.get("/v1/forms/nope/embed.js")).status_code == 404


# --- concurrency and fuzz ----------------------------------------------------------------------


async def test_200_concurrent_posts_of_one_new_email_make_one_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers)
    responses = await asyncio.gather(
        *(client.post("/v1/forms/contact/submit", json={**GOOD, "email": "same@example.ru"}) for _ in range(200))
    )
    assert [r.status_code for r in responses] == [201] * 200
    assert len({r.json()["lead_id"] for r in responses}) == 1
    assert await count(db, Lead) == 1
    assert await count(db, Activity) == 200


@given(body=st.binary(max_size=600), content_type=st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
     "multipart/form-data", "text/plain", ""]))
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_bytes_posted_to_a_form_get_2xx_3xx_or_4xx(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: bytes, content_type: str
) -> None:
    if (await client.get("/v1/forms/contact", headers=admin_headers)).status_code == 404:
        await make_form(client, admin_headers)
    resp = await client.post("/v1/forms/contact/submit", content=body, headers={"content-type": content_type})
    assert resp.status_code < 500, resp.text


@given(values=st.dictionaries(
    st.sampled_from(["first_name", "email", "phone", "topic", "consent", "website_url", "_vid", "_page", "utm_source"]),
    st.one_of(st.text(max_size=40), st.just("Ив\x00ан"), st.integers(), st.booleans(), st.none(),
              st.lists(st.text(max_size=5), max_size=2)),
))
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_json_values_get_201_or_a_4xx_naming_a_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], values: dict[str, Any]
) -> None:
    if (await client.get("/v1/forms/contact", headers=admin_headers)).status_code == 404:
        await make_form(client, admin_headers)
    resp = await client.post("/v1/forms/contact/submit", json=values)
    assert resp.status_code in (201, 422), resp.text
    if resp.status_code == 422:
        assert resp.json()["error"]["field"]


class FormQueries:
    """Counts the queries that read form definitions."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        self.engine = db.engine.sync_engine
        event.listen(self.engine, "before_cursor_execute", self.seen)

    def seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.count += "FROM forms" in statement

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self.seen)


async def test_a_busy_form_is_read_once_when_first_posted_and_once_each_time_its_copy_expires(db: Database) -> None:
    from leads.intake.forms import FormIn, LiveForms, create_form

    async with db.sessions() as session:
        await create_form(session, FormIn.model_validate(contact_form()))
        await session.commit()
    forms, queries = LiveForms(seconds=3600), FormQueries(db)
    try:
        first = await asyncio.gather(*(forms.get(db, "contact") for _ in range(50)))
        assert {f.name for f in first} == {"Заявка"} and queries.count == 1

        # Renamed by another process; this one's copy expires: posts go on with the copy they
        # have while one query fetches the new definition.
        async with db.sessions() as session:
            await session.execute(update(Form).where(Form.key == "contact").values(name="Заявка с сайта"))
            await session.commit()
        forms.seconds = 0
        during = await asyncio.gather(*(forms.get(db, "contact") for _ in range(50)))
        assert {f.name for f in during} == {"Заявка"}
        await forms.close()  # the refresh under way has finished
        assert queries.count == 2
        forms.seconds = 3600
        assert (await forms.get(db, "contact")).name == "Заявка с сайта" and queries.count == 2

        # Archived by another process: once the expired copy is fetched again, posts get 404.
        async with db.sessions() as session:
            await session.execute(update(Form).where(Form.key == "contact").values(archived_at=clock.now()))
            await session.commit()
        forms.seconds = 0
        await forms.get(db, "contact")
        await forms.close()
        results = await asyncio.gather(*(forms.get(db, "contact") for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, NotFound) for r in results) and queries.count == 4
    finally:
        queries.close()


async def test_an_edit_made_through_this_app_is_not_undone_by_a_read_that_started_before_it(db: Database) -> None:
    from leads.intake.forms import FormIn, LiveForms, create_form

    async with db.sessions() as session:
        await create_form(session, FormIn.model_validate(contact_form()))
        await session.commit()
    read, release = asyncio.Event(), asyncio.Event()

    class HeldReads:
        """The database, with each read held after its query until the test lets it go."""

        @contextlib.asynccontextmanager
        async def sessions(self) -> AsyncIterator[Any]:
            async with db.sessions() as session:
                yield session
            read.set()
            await release.wait()

    forms = LiveForms(seconds=3600)
    reading = asyncio.ensure_future(forms.get(cast(Database, HeldReads()), "contact"))
    await read.wait()  # the old definition has been read
    async with db.sessions() as session:
        await session.execute(update(Form).where(Form.key == "contact").values(name="Новое имя"))
        await session.commit()
    forms.forget("contact")
    release.set()
    assert (await reading).name == "Заявка"
    assert (await forms.get(db, "contact")).name == "Новое имя"


def _as_parse_qsl_reads(body: bytes) -> dict[str, str] | str:
    """The reading `parse_urlencoded` must give: the standard library's, with the same fallbacks."""
    for encoding in ("utf-8", "cp1251"):
        try:
            return dict(parse_qsl(body.decode(encoding), keep_blank_values=True, encoding=encoding,
                                  errors="strict", max_num_fields=1000))
        except UnicodeDecodeError:
            continue
        except ValueError:
            return "too many fields"
    return "the body is not valid UTF-8 or windows-1251 text"


# Pieces of urlencoded text, escapes whole and broken: valid UTF-8, a lone lead byte, cp1251's unused
# 0x98, an encoded surrogate, a truncated sequence, stray percent signs.
_FORM_TEXT = st.lists(st.sampled_from([*"aZ09 +=&%-_.~ёЖ\u00a0\x00", "%41", "%zz", "%D0%96", "%d1%91", "%C6", "%98",
                                       "%ED%A0%80", "%%", "%2", "%E2%82"]), max_size=40).map("".join)
_FORM_PAIRS = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=6)


@given(st.one_of(
    st.binary(max_size=200),
    _FORM_TEXT.map(lambda text: text.encode("utf-8")),
    _FORM_TEXT.map(lambda text: text.encode("cp1251", errors="replace")),
    st.tuples(_FORM_PAIRS, st.sampled_from(["utf-8", "cp1251"])).map(
        lambda case: urlencode(case[0], encoding=case[1], errors="replace").encode()
    ),
))
@hsettings(max_examples=1500, deadline=None)
def test_urlencoded_bodies_are_read_exactly_as_the_standard_library_reads_them(body: bytes) -> None:
    try:
        read: dict[str, str] | str = parse_urlencoded(body)
    except Invalid as exc:
        assert exc.field == "body"
        read = exc.message
    assert read == _as_parse_qsl_reads(body)


def test_a_body_of_over_a_thousand_fields_is_refused_and_a_thousand_are_read() -> None:
    assert len(parse_urlencoded(b"&".join(b"f%d=1" % i for i in range(1000)))) == 1000
    with pytest.raises(Invalid, match="too many fields"):
        parse_urlencoded(b"&".join(b"f%d=1" % i for i in range(1001)))


async def test_a_visitor_who_hangs_up_before_the_form_arrives_is_counted_as_gone_not_as_a_server_error(
    app: Any, client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    from core.metrics import HTTP_REQUESTS

    await make_form(client, admin_headers)
    route = ("POST", "/v1/forms/{form_key}/submit")
    gone, failed = HTTP_REQUESTS.labels(*route, "499"), HTTP_REQUESTS.labels(*route, "500")
    before = gone._value.get(), failed._value.get()
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}  # the tab was closed before the body came

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/forms/contact/submit", "raw_path": b"/v1/forms/contact/submit", "query_string": b"",
        "root_path": "", "client": ("203.0.113.7", 50000), "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded"),
                    (b"content-length", b"120")],
    }, receive, send)
    assert sent == []  # no one is left to answer
    assert (gone._value.get(), failed._value.get()) == (before[0] + 1, before[1])
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 0
