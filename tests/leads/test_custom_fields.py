"""Custom field definitions through /v1/custom-fields."""

from __future__ import annotations

import httpx
import pytest

from core.db import Database


async def test_define_use_and_remove_a_custom_field(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    resp = await client.post(
        "/v1/custom-fields",
        json={"key": "inn", "label": "ИНН", "type": "text", "pattern": r"\d{10}|\d{12}", "max_length": 12},
        headers=admin_headers,
    )
    assert resp.status_code == 201, resp.text
    field = resp.json()
    assert [f["key"] for f in (await client.get("/v1/custom-fields", headers=admin_headers)).json()] == ["inn"]

    ok = await client.post("/v1/leads", json={"email": "a@example.com", "custom": {"inn": "7707083893"}},
                           headers=admin_headers)
    assert ok.status_code == 201 and ok.json()["custom"] == {"inn": "7707083893"}
    bad = await client.patch(f"/v1/leads/{ok.json()['id']}", json={"custom": {"inn": "12"}}, headers=admin_headers)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "custom.inn"

    assert (await client.delete(f"/v1/custom-fields/{field['id']}", headers=admin_headers)).status_code == 204
    lead = (await client.get(f"/v1/leads/{ok.json()['id']}", headers=admin_headers)).json()
    assert lead["custom"] == {}


async def test_duplicate_key_is_409(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    body = {"key": "budget", "label": "Бюджет", "type": "number", "min_value": 0}
    assert (await client.post("/v1/custom-fields", json=body, headers=admin_headers)).status_code == 201
    resp = await client.post("/v1/custom-fields", json=body, headers=admin_headers)
    assert resp.status_code == 409 and resp.json()["error"]["field"] == "key"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "Бюджет", "label": "x", "type": "text"}, "key"),
        ({"key": "a", "label": "", "type": "text"}, "label"),
        ({"key": "a", "label": "x", "type": "money"}, "type"),
        ({"key": "a", "label": "x", "type": "choice"}, "choices"),
        ({"key": "a", "label": "x", "type": "text", "choices": ["a"]}, "choices"),
        ({"key": "a", "label": "x", "type": "text", "pattern": "(unclosed"}, "pattern"),
        ({"key": "a", "label": "x", "type": "number", "min_value": 5, "max_value": 1}, "min_value"),
        ({"key": "a", "label": "x", "type": "text", "min_value": 5}, "min_value"),
        ({"key": "a", "label": "x", "type": "text", "max_length": 0}, "max_length"),
        ({"key": "a", "label": "x", "type": "text", "required": "yes"}, "required"),
        ({"key": "a", "label": "x", "type": "text", "colour": "red"}, "colour"),
    ],
)
async def test_bad_definition_is_422_naming_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict, field: str
) -> None:
    resp = await client.post("/v1/custom-fields", json=body, headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


@pytest.mark.parametrize("kind", [["text"], {"text": 1}, 5, None])
async def test_type_that_is_not_text_is_422_naming_type_and_defines_nothing(
    client: httpx.AsyncClient, admin_headers: dict[str, str], kind: object
) -> None:
    resp = await client.post("/v1/custom-fields", json={"key": "a", "label": "x", "type": kind}, headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "type"
    assert (await client.get("/v1/custom-fields", headers=admin_headers)).json() == []


async def test_defining_fields_needs_forms_write(client: httpx.AsyncClient, db: Database) -> None:
    from tests.conftest import make_key

    writer = {"authorization": f"Bearer {await make_key(db, 'leads:write')}"}
    resp = await client.post("/v1/custom-fields", json={"key": "a", "label": "x", "type": "text"}, headers=writer)
    assert resp.status_code == 403
    designer = {"authorization": f"Bearer {await make_key(db, 'forms:write')}"}
    resp = await client.post("/v1/custom-fields", json={"key": "a", "label": "x", "type": "text"}, headers=designer)
    assert resp.status_code == 201
