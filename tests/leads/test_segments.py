"""Segments: the filter language, refresh events, members, preview."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core import clock
from core.db import Database
from core.outbox import OutboxEvent


async def _lead(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> dict:
    resp = await client.post("/v1/leads", json=body, headers=headers)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


async def _preview(client: httpx.AsyncClient, headers: dict[str, str], filter: dict) -> list[str]:
    resp = await client.post("/v1/segments/preview", json={"filter": filter}, headers=headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == len(body["leads"])
    return sorted(x["email"] for x in body["leads"])


@pytest.fixture
async def people(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    for spec in (
        {"key": "budget", "label": "Бюджет", "type": "number"},
        {"key": "plan", "label": "Тариф", "type": "choice", "choices": ["Базовый", "Про"]},
        {"key": "partner", "label": "Партнёр", "type": "boolean"},
    ):
        assert (await client.post("/v1/custom-fields", json=spec, headers=admin_headers)).status_code == 201
    with clock.frozen(datetime(2026, 1, 1, tzinfo=UTC)):
        await _lead(client, admin_headers, email="old@example.com", country="RU", city="Москва",
                    custom={"budget": 200000, "plan": "Про"}, utm_source="yandex")
    with clock.frozen(datetime(2026, 3, 1, tzinfo=UTC)):
        await _lead(client, admin_headers, email="new@example.com", country="RU", city="Казань", tags=["vip"],
                    custom={"budget": 50000, "partner": True}, utm_source="google")
        await _lead(client, admin_headers, email="kz@example.com", country="KZ", first_name="Айгерим")


@pytest.mark.usefixtures("people")
async def test_filter_language_selects_the_right_leads(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    async def pick(filter: dict) -> list[str]:
        return await _preview(client, admin_headers, filter)

    with clock.frozen(datetime(2026, 3, 10, tzinfo=UTC)):
        assert await pick({"field": "country", "op": "eq", "value": "ru"}) == ["new@example.com", "old@example.com"]
        assert await pick({"field": "custom.budget", "op": "gte", "value": 100000}) == ["old@example.com"]
        assert await pick({"field": "custom.plan", "op": "in", "value": ["про"]}) == ["old@example.com"]
        assert await pick({"field": "custom.partner", "op": "eq", "value": True}) == ["new@example.com"]
        assert await pick({"field": "custom.budget", "op": "is_empty"}) == ["kz@example.com"]
        assert await pick({"field": "city", "op": "starts_with", "value": "мос"}) == ["old@example.com"]
        assert await pick({"field": "city", "op": "ne", "value": "Москва"}) == ["kz@example.com", "new@example.com"]
        assert await pick({"tag": "vip"}) == ["new@example.com"]
        assert await pick({"touchpoint": {"source": "Yandex"}}) == ["old@example.com"]
        assert await pick({"activity": "api_created", "within_days": 30}) == ["kz@example.com", "new@example.com"]
        assert await pick({"activity": "api_created", "min_count": 2}) == []
        assert await pick({"field": "created_at", "op": "lt", "value": "2026-02-01"}) == ["old@example.com"]
        assert await pick({"all": [{"field": "country", "op": "eq", "value": "RU"}, {"not": {"tag": "vip"}}]}) == [
            "old@example.com"
        ]
        assert await pick({"any": [{"field": "first_name", "op": "contains", "value": "ГЕР"}, {"tag": "vip"}]}) == [
            "kz@example.com", "new@example.com"
        ]
        assert await pick({"any": []}) == []
        assert len(await pick({"all": []})) == 3


@pytest.mark.parametrize(
    ("filter", "field"),
    [
        ({"all": [{"tag": "vip"}, {"field": "country", "op": "like", "value": "RU"}]}, "filter.all.1.op"),
        ({"field": "colour", "op": "eq", "value": "red"}, "filter.field"),
        ({"field": "custom.nope", "op": "eq", "value": 1}, "filter.field"),
        ({"any": {"tag": "vip"}}, "filter.any"),
        ({"not": {"tag": "vip"}, "tag": "x"}, "filter"),
        ({"all": [{"activity": "x", "within_days": -1}]}, "filter.all.0.within_days"),
        ({"field": "country", "op": "in", "value": "RU"}, "filter.value"),
        ({"field": "country", "op": "eq"}, "filter.value"),
        ({"field": "created_at", "op": "contains", "value": "2026"}, "filter.op"),
        ({"touchpoint": {"colour": "red"}}, "filter.touchpoint.colour"),
        ({"tag": "vip", "extra": 1}, "filter.extra"),
    ],
)
async def test_bad_filter_is_422_naming_its_path(
    client: httpx.AsyncClient, admin_headers: dict[str, str], filter: dict, field: str
) -> None:
    resp = await client.post("/v1/segments", json={"name": "Плохой", "filter": filter}, headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert (await client.get("/v1/segments", headers=admin_headers)).json() == []


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_filter_time_with_no_utc_value_is_422_naming_the_value(
    client: httpx.AsyncClient, admin_headers: dict[str, str], value: str
) -> None:
    condition = {"field": "created_at", "op": "gt", "value": value}
    preview = await client.post("/v1/segments/preview", json={"filter": condition}, headers=admin_headers)
    assert preview.status_code == 422, preview.text
    assert preview.json()["error"]["field"] == "filter.value"
    saved = await client.post("/v1/segments", json={"name": "Древние", "filter": condition}, headers=admin_headers)
    assert saved.status_code == 422, saved.text
    assert (await client.get("/v1/segments", headers=admin_headers)).json() == []


async def test_refresh_emits_entered_and_left_exactly_for_the_differences(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    a = await _lead(client, admin_headers, email="a@example.com", country="RU")
    b = await _lead(client, admin_headers, email="b@example.com", country="RU")
    c = await _lead(client, admin_headers, email="c@example.com", country="KZ")
    resp = await client.post(
        "/v1/segments", json={"name": "Россия", "filter": {"field": "country", "op": "eq", "value": "RU"}},
        headers=admin_headers,
    )
    assert resp.status_code == 201, resp.text
    segment = resp.json()
    assert segment["member_count"] == 2

    async def refresh() -> dict:
        r = await client.post(f"/v1/segments/{segment['id']}/refresh", headers=admin_headers)
        assert r.status_code == 200, r.text
        return r.json()

    assert await refresh() == {"entered": 2, "left": 0, "member_count": 2}
    assert await refresh() == {"entered": 0, "left": 0, "member_count": 2}
    await client.patch(f"/v1/leads/{b['id']}", json={"country": "KZ"}, headers=admin_headers)
    await client.patch(f"/v1/leads/{c['id']}", json={"country": "RU"}, headers=admin_headers)
    assert await refresh() == {"entered": 1, "left": 1, "member_count": 2}

    async with db.sessions() as session:
        events = list(await session.scalars(
            select(OutboxEvent).where(OutboxEvent.name.in_(["segment.entered", "segment.left"]))
        ))
    happened = sorted((e.name, e.payload["lead_id"]) for e in events)
    assert happened == sorted([
        ("segment.entered", a["id"]), ("segment.entered", b["id"]),
        ("segment.left", b["id"]), ("segment.entered", c["id"]),
    ])
    members = (await client.get(f"/v1/segments/{segment['id']}/members", headers=admin_headers)).json()
    assert sorted(m["email"] for m in members["items"]) == ["a@example.com", "c@example.com"]
    listed = (await client.get("/v1/leads", params={"segment": segment["id"]}, headers=admin_headers)).json()
    assert sorted(m["email"] for m in listed["items"]) == ["a@example.com", "c@example.com"]


async def test_segment_crud_and_duplicate_name(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    body = {"name": "VIP", "filter": {"tag": "vip"}}
    first = await client.post("/v1/segments", json=body, headers=admin_headers)
    assert first.status_code == 201
    dup = await client.post("/v1/segments", json=body, headers=admin_headers)
    assert dup.status_code == 409 and dup.json()["error"]["field"] == "name"
    sid = first.json()["id"]
    renamed = await client.patch(f"/v1/segments/{sid}", json={"name": "Важные"}, headers=admin_headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Важные"
    bad = await client.patch(f"/v1/segments/{sid}", json={"filter": {"tag": ""}}, headers=admin_headers)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "filter.tag"
    assert (await client.get(f"/v1/segments/{sid}", headers=admin_headers)).json()["filter"] == {"tag": "vip"}
    assert (await client.delete(f"/v1/segments/{sid}", headers=admin_headers)).status_code == 204
    assert (await client.get(f"/v1/segments/{sid}", headers=admin_headers)).status_code == 404


async def test_reading_segments_needs_leads_read_and_defining_needs_forms_write(
    client: httpx.AsyncClient, db: Database
) -> None:
    from tests.conftest import make_key

    reader = {"authorization": f"Bearer {await make_key(db, 'leads:read')}"}
    assert (await client.get("/v1/segments", headers=reader)).status_code == 200
    resp = await client.post("/v1/segments", json={"name": "x", "filter": {"tag": "a"}}, headers=reader)
    assert resp.status_code == 403


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)
keys = st.sampled_from(["all", "any", "not", "field", "op", "value", "tag", "activity", "touchpoint",
                        "within_days", "min_count"])
fields = st.sampled_from(["country", "city", "custom.budget", "created_at", "birthday", "owner_id", "email", "x"])
ops = st.sampled_from(["eq", "ne", "in", "contains", "starts_with", "gt", "gte", "lt", "lte", "is_empty", "is_set"])
leaf = st.fixed_dictionaries({"field": fields, "op": ops}, optional={"value": json_values}) | st.dictionaries(
    keys, json_values, max_size=3
)
filters = st.recursive(
    leaf,
    lambda inner: st.builds(lambda k, v: {k: v}, st.sampled_from(["all", "any"]), st.lists(inner, max_size=3))
    | st.builds(lambda v: {"not": v}, inner),
    max_leaves=8,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filter=filters | json_values)
async def test_preview_with_random_json_is_never_a_server_error(
    client: httpx.AsyncClient, admin_headers: dict[str, str], filter: object
) -> None:
    await client.post("/v1/custom-fields", json={"key": "budget", "label": "B", "type": "number"},
                      headers=admin_headers)
    resp = await client.post("/v1/segments/preview", json={"filter": filter}, headers=admin_headers)
    assert resp.status_code in (200, 422), resp.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), path=st.sampled_from(["/v1/segments", "/v1/segments/preview",
                                                          "/v1/custom-fields"]))
async def test_random_bytes_to_segment_and_field_endpoints_are_never_a_server_error(
    client: httpx.AsyncClient, admin_headers: dict[str, str], raw: bytes, path: str
) -> None:
    headers = {**admin_headers, "content-type": "application/json"}
    resp = await client.post(path, content=raw, headers=headers)
    assert resp.status_code < 500, resp.text


async def test_activity_window_follows_the_clock(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    with clock.frozen(datetime(2026, 1, 1, tzinfo=UTC)):
        await _lead(client, admin_headers, email="a@example.com")
        recent = {"activity": "api_created", "within_days": 30}
        assert await _preview(client, admin_headers, recent) == ["a@example.com"]
        clock.advance(timedelta(days=31))
        assert await _preview(client, admin_headers, recent) == []
