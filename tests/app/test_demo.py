"""The demo: seed data for an empty install and the bilingual landing page."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from app.demo import seed_demo
from core.db import Database
from leads.models import Form, Lead, Touchpoint, TrackingNumber
from tests.leads.test_forms import count


async def seed(db: Database) -> bool:
    async with db.sessions() as session:
        seeded = await seed_demo(session)
        await session.commit()
    return seeded


async def test_demo_seeds_an_empty_database_once(db: Database) -> None:
    assert await seed(db) is True
    async with db.sessions() as session:
        form = await session.scalar(select(Form))
        number = await session.scalar(select(TrackingNumber))
        names = set(await session.scalars(select(Lead.first_name)))
        sources = set(await session.scalars(select(Touchpoint.source)))
    assert form is not None and form.key == "demo-contact" and form.consent_required
    assert [f["name"] for f in form.fields] == ["name", "email", "phone", "company"]
    assert number is not None and (number.number, number.campaign) == ("+74950000001", "demo-radio")
    assert {"Иван", "Анна"} <= names
    assert {"yandex", "vk", "google"} <= sources
    leads = await count(db, Lead)
    assert await seed(db) is False
    assert await count(db, Lead) == leads


async def test_demo_is_not_seeded_over_existing_leads(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await client.post("/v1/leads", json={"email": "real@example.ru"}, headers=admin_headers)
    assert await seed(db) is False
    assert await count(db, Form) == 0


async def test_landing_form_without_javascript_makes_a_lead_from_the_utm_source(
    client: httpx.AsyncClient, db: Database
) -> None:
    await seed(db)
    page = await client.get("/demo/landing?utm_source=telegram&utm_campaign=launch")
    assert page.status_code == 200
    assert "Отправить" in page.text and "Send request" in page.text
    assert 'action="/v1/forms/demo-contact/submit"' in page.text and 'src="/t.js"' in page.text

    resp = await client.post(
        "/v1/forms/demo-contact/submit",
        data={"name": "Дарья", "email": "darya@example.ru", "phone": "", "company": "", "website_url": "",
              "consent": "on"},
        headers={"referer": "http://testserver/demo/landing?utm_source=telegram&utm_campaign=launch"},
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/demo/thanks"
    thanks = await client.get("/demo/thanks")
    assert "Спасибо" in thanks.text and "Thank you" in thanks.text
    async with db.sessions() as session:
        lead = await session.scalar(select(Lead).where(Lead.email == "darya@example.ru"))
        assert lead is not None and lead.first_name == "Дарья"
        touch = await session.scalar(select(Touchpoint).where(Touchpoint.lead_id == lead.id))
    assert touch is not None and (touch.source, touch.campaign) == ("telegram", "launch")
