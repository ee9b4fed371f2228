from __future__ import annotations

import httpx
from sqlalchemy import func, select

from core.db import Database
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
    second = await client.post("/v1/leads", json={"email": "A@example.com", "company": "ООО Ромашка"}, headers=admin_headers)
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


async def test_missing_key_is_401_and_wrong_scope_is_403(client: httpx.AsyncClient, db: Database) -> None:
    from tests.conftest import make_key

    assert (await client.post("/v1/leads", json={"email": "a@example.com"})).status_code == 401
    reader = await make_key(db, "leads:read")
    resp = await client.post("/v1/leads", json={"email": "a@example.com"}, headers={"authorization": f"Bearer {reader}"})
    assert resp.status_code == 403
    assert resp.json()["error"]["field"] == "authorization"
