from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from core import clock
from core.db import Database
from core.emails import normalize_email, plain_email
from core.errors import Invalid
from core.outbox import OutboxEvent
from leads.models import Lead


async def test_create_lead_then_read_it_back(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    resp = await client.post(
        "/v1/leads",
        json={"email": "Ivan.Petrov@Example.COM", "phone": "8 (912) 345-67-89", "first_name": "Иван", "tags": ["vip"]},
        headers=admin_headers,
    )
    assert resp.status_code == 201, resp.text
    lead = resp.json()
    assert lead["email"] == "ivan.petrov@example.com"
    assert lead["phone"] == "+79123456789"
    assert lead["first_name"] == "Иван"
    assert lead["tags"] == ["vip"]

    again = await client.get(f"/v1/leads/{lead['id']}", headers=admin_headers)
    assert again.status_code == 200
    assert again.json()["email"] == "ivan.petrov@example.com"


async def test_same_email_twice_updates_one_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    first = await client.post("/v1/leads", json={"email": "a@example.com"}, headers=admin_headers)
    second = await client.post(
        "/v1/leads", json={"email": "A@example.com", "company": "ООО Ромашка"}, headers=admin_headers
    )
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["company"] == "ООО Ромашка"
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 1
        names = list(await session.scalars(select(OutboxEvent.name).order_by(OutboxEvent.created_at)))
    assert names.count("lead.created") == 1 and names.count("lead.updated") == 1


async def test_bad_email_gets_422_naming_the_field_and_no_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    resp = await client.post("/v1/leads", json={"email": "not-an-email", "first_name": "X"}, headers=admin_headers)
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "email"
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 0


@pytest.mark.parametrize("body", [{}, {"first_name": "Иван", "company": "ООО Ромашка"}, {"email": "  "}])
async def test_create_without_email_phone_or_visitor_id_gets_422_naming_email_and_no_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, body: dict[str, str]
) -> None:
    resp = await client.post("/v1/leads", json=body, headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "email"
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 0
    by_visitor = await client.post("/v1/leads", json={"visitor_id": "c0ffee00c0ffee00"}, headers=admin_headers)
    assert by_visitor.status_code == 201, by_visitor.text


async def test_create_that_fails_after_the_lead_is_written_leaves_no_trace(
    app: object, admin_headers: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guarantee 1: lead, touchpoint, activity, consent and events are one transaction."""
    import leads.service
    from leads.models import Activity, Consent, LeadTag, Touchpoint, Visitor

    real_emit = leads.service.emit
    calls = 0

    async def emit_then_fail(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the database went away after the lead was written")
        return await real_emit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(leads.service, "emit", emit_then_fail)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        resp = await http.post("/v1/leads", headers=admin_headers, json={
            "email": "ivan@example.com", "phone": "+79123456789", "tags": ["vip"], "visitor_id": "c0ffee00c0ffee00",
            "consent": [{"purpose": "marketing", "wording": "Согласен"}],
        })
    assert resp.status_code == 500 and calls == 2
    async with db.sessions() as session:
        for table in (Lead, Touchpoint, Activity, Consent, OutboxEvent, LeadTag, Visitor):
            assert await session.scalar(select(func.count()).select_from(table)) == 0, table.__name__


async def test_create_with_an_owner_who_is_no_user_gets_422_naming_owner_id_and_no_lead(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    body = {"email": "a@example.com", "owner_id": str(uuid.UUID(int=5))}
    resp = await client.post("/v1/leads", json=body, headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "owner_id"
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 0
        assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 0


async def test_missing_key_is_401_and_wrong_scope_is_403(client: httpx.AsyncClient, db: Database) -> None:
    from tests.conftest import make_key

    assert (await client.post("/v1/leads", json={"email": "a@example.com"})).status_code == 401
    reader = await make_key(db, "leads:read")
    headers = {"authorization": f"Bearer {reader}"}
    resp = await client.post("/v1/leads", json={"email": "a@example.com"}, headers=headers)
    assert resp.status_code == 403
    assert resp.json()["error"]["field"] == "authorization"


# --- list, search, paging ---------------------------------------------------------------------


async def _lead(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> dict:
    resp = await client.post("/v1/leads", json=body, headers=headers)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


async def test_list_pages_return_every_lead_exactly_once_while_new_leads_arrive(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    start = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    created = []
    with clock.frozen(start):
        # Several leads share one created_at: the id breaks the tie.
        for i in range(7):
            created.append((await _lead(client, admin_headers, email=f"p{i}@example.com"))["id"])
        seen: list[str] = []
        cursor = None
        for page_no in range(20):
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            resp = await client.get("/v1/leads", params=params, headers=admin_headers)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            seen.extend(item["id"] for item in body["items"])
            clock.advance(timedelta(seconds=1))
            created.append((await _lead(client, admin_headers, email=f"late{page_no}@example.com"))["id"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert len(seen) == len(set(seen))
    assert set(created[:7]) <= set(seen)
    assert set(seen) <= set(created)


async def test_search_finds_cyrillic_names_in_any_case(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    ivan = await _lead(client, admin_headers, email="ivan@example.com", first_name="Иван", last_name="Петров",
                       company="ООО «Ромашка»")
    await _lead(client, admin_headers, email="olga@example.com", first_name="Ольга", last_name="Семёнова")
    await _lead(client, admin_headers, email="john@example.com", first_name="John")

    async def ids(q: str) -> list[str]:
        resp = await client.get("/v1/leads", params={"q": q}, headers=admin_headers)
        assert resp.status_code == 200, resp.text
        return [item["email"] for item in resp.json()["items"]]

    assert await ids("ИВАН") == ["ivan@example.com"]
    assert await ids("иван ромашка") == ["ivan@example.com"]
    assert await ids("семенова") == ["olga@example.com"]  # ё typed as е
    assert await ids("JOHN") == ["john@example.com"]
    assert await ids("100%") == []
    assert ivan["id"]


async def test_list_filters_by_tag_country_campaign_custom_and_dates(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    resp = await client.post(
        "/v1/custom-fields", json={"key": "budget", "label": "Бюджет", "type": "number"}, headers=admin_headers
    )
    assert resp.status_code == 201, resp.text
    with clock.frozen(datetime(2026, 2, 1, 12, tzinfo=UTC)):
        await _lead(client, admin_headers, email="a@example.com", country="RU", tags=["vip"],
                    utm_campaign="spring", custom={"budget": 150000})
    with clock.frozen(datetime(2026, 2, 10, 12, tzinfo=UTC)):
        await _lead(client, admin_headers, email="b@example.com", country="KZ", custom={"budget": 5000})

    async def emails(**params: str) -> list[str]:
        resp = await client.get("/v1/leads", params=params, headers=admin_headers)
        assert resp.status_code == 200, resp.text
        return [item["email"] for item in resp.json()["items"]]

    assert await emails(tag="vip") == ["a@example.com"]
    assert await emails(country="kz") == ["b@example.com"]
    assert await emails(campaign="spring") == ["a@example.com"]
    assert await emails(**{"custom.budget": "5000"}) == ["b@example.com"]
    assert await emails(created_from="2026-02-05") == ["b@example.com"]
    assert await emails(created_to="2026-02-01") == ["a@example.com"]
    assert await emails(email="B@Example.com") == ["b@example.com"]
    assert await emails(source_channel="api") == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"cursor": "nonsense"}, "cursor"),
        ({"country": "Russia"}, "country"),
        ({"customer_status": "vip"}, "customer_status"),
        ({"created_from": "yesterday"}, "created_from"),
        ({"email": "not-an-email"}, "email"),
        ({"custom.nope": "1"}, "custom.nope"),
        ({"segment": "x"}, "segment"),
        ({"colour": "red"}, "colour"),
        ({"q": "a\x00b"}, "q"),
        # times that exist in their own zone but not in UTC
        ({"created_from": "0001-01-01T00:00:00+01:00"}, "created_from"),
        ({"created_to": "9999-12-31T23:59:59-05:00"}, "created_to"),
    ],
)
async def test_bad_list_filter_gets_422_naming_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], params: dict[str, str], field: str
) -> None:
    resp = await client.get("/v1/leads", params=params, headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps(["0001-01-01T00:00:00+01:00", str(uuid.UUID(int=1))]).encode(),  # a time with no UTC value
        b"[" * 5000,  # nested deeper than the JSON parser recurses
    ],
)
async def test_forged_cursor_gets_422_naming_cursor(
    client: httpx.AsyncClient, admin_headers: dict[str, str], payload: bytes
) -> None:
    cursor = base64.urlsafe_b64encode(payload).decode()
    lead = await _lead(client, admin_headers, email="a@example.com")
    for path in ("/v1/leads", f"/v1/leads/{lead['id']}/activities"):
        resp = await client.get(path, params={"cursor": cursor}, headers=admin_headers)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "cursor"


# --- PATCH, notes, consents, timeline ---------------------------------------------------------


async def test_patch_changes_only_sent_fields_and_announces_them(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    lead = await _lead(client, admin_headers, email="a@example.com", first_name="Иван", city="Москва", tags=["a", "b"])
    resp = await client.patch(
        f"/v1/leads/{lead['id']}",
        json={"last_name": "Петров", "city": None, "tags_add": ["vip"], "tags_remove": ["a"]},
        headers=admin_headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["first_name"], body["last_name"], body["city"]) == ("Иван", "Петров", None)
    assert body["tags"] == ["b", "vip"]
    async with db.sessions() as session:
        event = await session.scalar(
            select(OutboxEvent).where(OutboxEvent.name == "lead.updated").order_by(OutboxEvent.created_at.desc())
        )
    assert event is not None and sorted(event.payload["changed"]) == ["city", "last_name", "tags"]


async def test_patch_to_an_email_another_lead_has_is_409_naming_email(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await _lead(client, admin_headers, email="taken@example.com")
    lead = await _lead(client, admin_headers, email="mine@example.com")
    resp = await client.patch(f"/v1/leads/{lead['id']}", json={"email": "Taken@example.com"}, headers=admin_headers)
    assert resp.status_code == 409
    assert resp.json()["error"]["field"] == "email"
    again = await client.get(f"/v1/leads/{lead['id']}", headers=admin_headers)
    assert again.json()["email"] == "mine@example.com"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "12"}, "phone"),
        ({"custom": {"nope": 1}}, "custom.nope"),
        ({"customer_status": None}, "customer_status"),
        ({"owner_id": str(uuid.UUID(int=5))}, "owner_id"),
        ({"favourite_colour": "red"}, "favourite_colour"),
        ({"tags": ["a"], "tags_add": ["b"]}, "tags"),
        ({"first_name": "a\x00"}, "first_name"),
    ],
)
async def test_bad_patch_gets_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict, field: str
) -> None:
    lead = await _lead(client, admin_headers, email="a@example.com", first_name="Иван")
    resp = await client.patch(f"/v1/leads/{lead['id']}", json={"last_name": "X", **body}, headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    again = (await client.get(f"/v1/leads/{lead['id']}", headers=admin_headers)).json()
    assert again["last_name"] is None and again["first_name"] == "Иван"


async def test_note_and_consent_withdrawal_appear_on_the_timeline(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    lead = await _lead(client, admin_headers, email="a@example.com",
                       consent=[{"purpose": "marketing", "wording": "Согласен на рассылку"}])
    with clock.frozen(datetime(2030, 1, 1, tzinfo=UTC)):
        note = await client.post(f"/v1/leads/{lead['id']}/notes", json={"text": "Перезвонить в понедельник"},
                                 headers=admin_headers)
        assert note.status_code == 201, note.text
        clock.advance(timedelta(minutes=1))
        withdrawn = await client.post(
            f"/v1/leads/{lead['id']}/consents", json={"purpose": "marketing", "granted": False, "ip": "198.51.100.4"},
            headers=admin_headers,
        )
    assert withdrawn.status_code == 201, withdrawn.text
    assert withdrawn.json()["ip"] == "198.51.100.4"
    timeline = (await client.get(f"/v1/leads/{lead['id']}/activities", headers=admin_headers)).json()
    assert [a["type"] for a in timeline["items"]] == ["consent_withdrawn", "note", "api_created"]
    assert timeline["items"][1]["data"]["text"] == "Перезвонить в понедельник"
    consents = (await client.get(f"/v1/leads/{lead['id']}/consents", headers=admin_headers)).json()
    assert [c["granted"] for c in consents] == [True, False]
    async with db.sessions() as session:
        names = list(await session.scalars(select(OutboxEvent.name)))
    assert names.count("consent.withdrawn") == 1


async def test_timeline_pages_newest_first(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    lead = await _lead(client, admin_headers, email="a@example.com")
    with clock.frozen(datetime(2030, 1, 1, tzinfo=UTC)):
        for i in range(5):
            clock.advance(timedelta(minutes=1))
            await client.post(f"/v1/leads/{lead['id']}/notes", json={"text": f"n{i}"}, headers=admin_headers)
    texts, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/v1/leads/{lead['id']}/activities", params=params, headers=admin_headers)).json()
        texts += [a["data"].get("text", a["type"]) for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert texts == ["n4", "n3", "n2", "n1", "n0", "api_created"]


async def test_touchpoints_list_where_the_lead_came_from(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    lead = await _lead(client, admin_headers, email="a@example.com", utm_source="yandex", utm_campaign="spring")
    await _lead(client, admin_headers, email="a@example.com", utm_source="google")
    resp = await client.get(f"/v1/leads/{lead['id']}/touchpoints", headers=admin_headers)
    assert resp.status_code == 200
    assert [(t["source"], t["campaign"]) for t in resp.json()["items"]] == [("yandex", "spring"), ("google", None)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
patch_bodies = st.dictionaries(
    st.sampled_from(
        ["email", "phone", "first_name", "country", "birthday", "customer_status", "custom", "tags", "tags_add",
         "owner_id", "consent", "timezone", "other"]
    ) | st.text(max_size=8),
    json_values,
    max_size=5,
)


FUZZ = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=patch_bodies | json_values)
async def test_patch_with_random_json_is_never_a_server_error(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: object
) -> None:
    lead = await _lead(client, admin_headers, email="fuzz@example.com")
    resp = await client.patch(f"/v1/leads/{lead['id']}", json=body, headers=admin_headers)
    assert resp.status_code < 500, resp.text


LEAD_PATHS = [("PATCH", ""), ("POST", "/notes"), ("POST", "/consents"), ("POST", "/merge")]


@FUZZ
@given(raw=st.binary(max_size=200), where=st.sampled_from(LEAD_PATHS), query=st.text(max_size=30))
async def test_random_bytes_to_lead_endpoints_are_never_a_server_error(
    client: httpx.AsyncClient, admin_headers: dict[str, str], raw: bytes, where: tuple[str, str], query: str
) -> None:
    lead = await _lead(client, admin_headers, email="bytes@example.com")
    method, suffix = where
    headers = {**admin_headers, "content-type": "application/json"}
    resp = await client.request(method, f"/v1/leads/{lead['id']}{suffix}", content=raw, headers=headers)
    assert resp.status_code < 500, resp.text
    listed = await client.get("/v1/leads", params={"q": query, query[:5] or "x": query}, headers=admin_headers)
    assert listed.status_code < 500, listed.text


_ADDRESS_PART = st.text(alphabet="aZ09.-_+'!@", min_size=0, max_size=12)


@given(local=_ADDRESS_PART, domain=_ADDRESS_PART, tld=st.sampled_from(
    ["ru", "COM", "рф", "c", "c1", "test", "local", "xn--p1ai", "example", "", "r-u", "ru."]))
@hsettings(max_examples=3000, deadline=None)
def test_the_everyday_email_shortcut_answers_exactly_as_the_library(local: str, domain: str, tld: str) -> None:
    """Addresses the shortcut takes must be ones the library accepts, normalised the same way."""
    address = f"{local}@{domain}.{tld}"
    shortcut = plain_email(address)
    try:
        library: str | None = validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        library = None
    assert shortcut is None or shortcut == library
    assert normalize_email("  Ivan.Petrov+lead@Example.COM ") == "ivan.petrov+lead@example.com"
    with pytest.raises(Invalid):
        normalize_email("ivan..petrov@example.com")
