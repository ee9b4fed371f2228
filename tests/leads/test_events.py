"""Behaviour events and the tracker: anonymous page views that become the lead's history."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from core import clock
from core.db import Database
from core.outbox import OutboxEvent
from core.settings import Settings
from leads.models import Activity, Lead, Touchpoint
from tests.conftest import make_key
from tests.leads.test_forms import GOOD, count, make_form

VID = "c0ffee00c0ffee00"


def page_view(**extra: Any) -> dict[str, Any]:
    return {"type": "page_view", "visitor_id": VID, "url": "https://example.ru/prices",
            "title": "Цены", "referrer": "https://example.ru/", **extra}


async def activities(db: Database) -> list[Activity]:
    async with db.sessions() as session:
        return list(await session.scalars(select(Activity).order_by(Activity.occurred_at, Activity.type)))


async def test_anonymous_page_views_join_the_lead_when_the_visitor_submits_a_form(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, frozen_now: Any
) -> None:
    landing = page_view(url="https://example.ru/?utm_source=yandex", utm_source="yandex", utm_medium="cpc",
                        referrer="https://ya.ru/")
    resp = await client.post("/v1/events", json=landing)
    assert resp.status_code == 202 and resp.json() == {"accepted": True}
    clock.advance(timedelta(minutes=1))
    assert (await client.post("/v1/events", json=page_view())).status_code == 202
    before = await activities(db)
    assert [(a.type, a.lead_id) for a in before] == [("page_view", None), ("page_view", None)]
    async with db.sessions() as session:
        touch = await session.scalar(select(Touchpoint))
    assert touch is not None and (touch.lead_id, touch.source, touch.visitor_id) == (None, "yandex", VID)

    clock.advance(timedelta(minutes=1))
    await make_form(client, admin_headers)
    posted = await client.post("/v1/forms/contact/submit", json={**GOOD, "_vid": VID})
    lead_id = posted.json()["lead_id"]
    after = await activities(db)
    assert [(a.type, str(a.lead_id)) for a in after] == [
        ("page_view", lead_id), ("page_view", lead_id), ("form_submitted", lead_id)]
    async with db.sessions() as session:
        sources = list(await session.scalars(select(Touchpoint.source).where(Touchpoint.lead_id == uuid.UUID(lead_id))))
    assert "yandex" in sources


async def test_page_view_of_a_known_visitor_goes_on_the_leads_timeline_for_scoring(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers)
    lead_id = (await client.post("/v1/forms/contact/submit", json={**GOOD, "_vid": VID})).json()["lead_id"]
    resp = await client.post("/v1/events", json=page_view(type="download", properties={"file": "прайс.pdf"}))
    assert resp.status_code == 202
    async with db.sessions() as session:
        download = await session.scalar(select(Activity).where(Activity.type == "download"))
        events = list(await session.scalars(select(OutboxEvent).where(OutboxEvent.name == "lead.activity")))
    assert download is not None and str(download.lead_id) == lead_id
    assert download.data["properties"] == {"file": "прайс.pdf"}
    assert any(e.payload["activity_id"] == str(download.id) for e in events)
    # A click inside the site carries no marketing context, so it is no touchpoint.
    assert download.touchpoint_id is None


async def test_tracker_beacon_sent_as_text_plain_is_accepted(client: httpx.AsyncClient, db: Database) -> None:
    resp = await client.post("/v1/events", content=json.dumps(page_view()),
                             headers={"content-type": "text/plain;charset=UTF-8"})
    assert resp.status_code == 202
    assert resp.headers["access-control-allow-origin"] == "*"
    assert await count(db, Activity) == 1


async def test_server_side_events_name_a_lead_with_an_api_key(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    writer = {"authorization": f"Bearer {await make_key(db, 'leads:write')}"}
    event = {"type": "webinar_attended", "email": "Olga@Example.ru", "occurred_at": "2026-03-01T10:00:00+03:00"}
    assert (await client.post("/v1/events", json=event)).status_code == 403
    assert await count(db, Lead) == 0

    resp = await client.post("/v1/events", json=event, headers=writer)
    assert resp.status_code == 202, resp.text
    async with db.sessions() as session:
        lead = await session.scalar(select(Lead))
        activity = await session.scalar(select(Activity))
    assert lead is not None and lead.email == "olga@example.ru"
    assert activity is not None and activity.type == "webinar_attended"
    assert activity.occurred_at.isoformat() == "2026-03-01T07:00:00+00:00"

    again = await client.post("/v1/events", json={"type": "download", "lead_id": str(lead.id)}, headers=writer)
    assert again.status_code == 202
    assert await count(db, Lead) == 1 and await count(db, Activity) == 2
    missing = await client.post(
        "/v1/events", json={"type": "download", "lead_id": "00000000-0000-0000-0000-000000000000"}, headers=writer)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "lead_id"
    reader = {"authorization": f"Bearer {await make_key(db, 'leads:read')}"}
    assert (await client.post("/v1/events", json=event, headers=reader)).status_code == 403


async def test_bad_events_get_4xx_naming_the_field(client: httpx.AsyncClient, db: Database) -> None:
    cases = [
        (page_view(type="Page View"), 422, "type"),
        (page_view(type="form_submitted"), 422, "type"),
        (page_view(visitor_id=None), 422, "visitor_id"),
        (page_view(visitor_id="short"), 422, "visitor_id"),
        (page_view(properties=[1, 2]), 422, "properties"),
        (page_view(unknown=1), 422, "unknown"),
        (page_view(url="x" * 2001), 422, "url"),
        (page_view(title="a\x00b"), 422, "title"),
        (page_view(properties={"file": ["ok", "a\x00b"]}), 422, "properties.file.1"),
    ]
    for body, status, field in cases:
        resp = await client.post("/v1/events", json=body)
        assert (resp.status_code, resp.json()["error"]["field"]) == (status, field), body
    as_json = {"content-type": "application/json"}
    assert (await client.post("/v1/events", content=b"[1]", headers=as_json)).status_code == 422
    assert (await client.post("/v1/events", content=b"a=b", headers={
        "content-type": "application/x-www-form-urlencoded"})).status_code == 415
    huge = page_view(properties={"x": "я" * 70_000})
    assert (await client.post("/v1/events", json=huge)).status_code == 413
    assert await count(db, Activity) == 0


async def test_event_time_with_no_utc_value_gets_422_naming_occurred_at(
    client: httpx.AsyncClient, db: Database
) -> None:
    headers = {"authorization": f"Bearer {await make_key(db, 'leads:write')}"}
    for at in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        resp = await client.post("/v1/events", json=page_view(occurred_at=at), headers=headers)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "occurred_at"
    assert await count(db, Activity) == 0


async def test_too_many_events_from_one_address_get_429(
    client: httpx.AsyncClient, settings: Settings, frozen_now: Any
) -> None:
    settings.form_rate_limit = 1  # ten page views a minute
    statuses = [(await client.post("/v1/events", json=page_view())).status_code for _ in range(11)]
    assert statuses == [202] * 10 + [429]
    clock.advance(timedelta(minutes=1))
    assert (await client.post("/v1/events", json=page_view())).status_code == 202


async def test_tracker_script_keeps_a_first_party_visitor_id_and_posts_page_views(client: httpx.AsyncClient) -> None:
    resp = await client.get("/t.js")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/javascript")
    for needle in ("nurture_vid", "localStorage", "/v1/events", "sendBeacon", "keepalive", "utm_source", "page_view"):
        assert needle in resp.text
    assert "http://" not in resp.text and "https://" not in resp.text.split("*/", 1)[1]  # no external assets


@given(body=st.binary(max_size=400), content_type=st.sampled_from(["application/json", "text/plain", "", "text/html"]))
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_bytes_posted_as_an_event_get_2xx_or_4xx(
    client: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    resp = await client.post("/v1/events", content=body, headers={"content-type": content_type})
    assert resp.status_code < 500, resp.text


@given(event=st.fixed_dictionaries(
    {"type": st.sampled_from(["page_view", "download", "x.y", "", "email_open"])},
    optional={
        "visitor_id": st.one_of(st.just(VID), st.text(max_size=70), st.none(), st.integers()),
        "url": st.one_of(st.text(max_size=50), st.none(), st.just("https://example.ru/\x00")),
        "referrer": st.one_of(st.text(max_size=50), st.just("https://other.example/")),
        "utm_source": st.text(max_size=20),
        "properties": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), st.text()),
        "occurred_at": st.one_of(st.text(max_size=30), st.just("2026-01-01T00:00:00")),
    },
))
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_event_shape_gets_202_or_422(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    resp = await client.post("/v1/events", json=event)
    assert resp.status_code in (202, 422), resp.text


async def test_event_naming_an_erased_email_gets_409_and_does_not_bring_the_person_back(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    lead = (await client.post("/v1/leads", json={"email": "gone@example.com"}, headers=admin_headers)).json()
    assert (await client.delete(f"/v1/leads/{lead['id']}", headers=admin_headers)).status_code == 204
    before = await count(db, Activity)

    writer = {"authorization": f"Bearer {await make_key(db, 'leads:write')}"}
    resp = await client.post("/v1/events", json={"type": "webinar_attended", "email": "Gone@example.com"},
                             headers=writer)
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["field"] == "email"
    assert await count(db, Lead) == 1 and await count(db, Activity) == before
    async with db.sessions() as session:
        names = list(await session.scalars(select(OutboxEvent.name)))
    assert "lead.created" in names and names.count("lead.created") == 1


async def test_anonymous_tracker_may_only_send_page_views_downloads_and_custom_events(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    await make_form(client, admin_headers)
    lead_id = (await client.post("/v1/forms/contact/submit", json={**GOOD, "_vid": VID})).json()["lead_id"]
    before = await count(db, Activity)
    for forged in ("note", "consent_granted", "consent_withdrawn", "merged", "erased", "imported", "webinar"):
        resp = await client.post("/v1/events", json=page_view(type=forged))
        assert resp.status_code == 422, forged
        assert resp.json()["error"]["field"] == "type"
    assert await count(db, Activity) == before

    for allowed in ("page_view", "download", "custom.video_played"):
        assert (await client.post("/v1/events", json=page_view(type=allowed))).status_code == 202, allowed
    async with db.sessions() as session:
        types = list(await session.scalars(
            select(Activity.type).where(Activity.lead_id == uuid.UUID(lead_id)).order_by(Activity.occurred_at)))
    assert types[-3:] == ["page_view", "download", "custom.video_played"]

    # A server with an API key still records its own kinds of events, but not intake's.
    writer = {"authorization": f"Bearer {await make_key(db, 'leads:write')}"}
    server = await client.post("/v1/events", json={"type": "webinar", "lead_id": lead_id}, headers=writer)
    assert server.status_code == 202
    own = await client.post("/v1/events", json={"type": "form_submitted", "lead_id": lead_id}, headers=writer)
    assert own.status_code == 422


async def test_a_server_posts_events_in_batches_all_or_none(client: Any, admin_headers: dict[str, str]) -> None:
    created = await client.post("/v1/leads", headers=admin_headers, json={"email": "sergey@factory.ru"})
    lead_id = created.json()["id"]
    before = (await client.get(f"/v1/leads/{lead_id}/activities", headers=admin_headers)).json()["items"]
    good = {"type": "page_view", "lead_id": lead_id, "url": "https://shop.ru/pricing?utm_source=yandex",
            "utm_source": "yandex"}
    bad = await client.post("/v1/events/batch", headers=admin_headers, json={"events": [
        good, {"type": "download", "email": "new.person@webinar.ru"}, {"type": "email_opened", "lead_id": lead_id},
    ]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "events.2.type"
    timeline = await client.get(f"/v1/leads/{lead_id}/activities", headers=admin_headers)
    assert timeline.json()["items"] == before  # nothing of the refused batch was kept
    nobody = await client.get("/v1/leads", headers=admin_headers, params={"email": "new.person@webinar.ru"})
    assert nobody.json()["items"] == []

    ok = await client.post("/v1/events/batch", headers=admin_headers, json={"events": [
        good, {"type": "download", "email": "new.person@webinar.ru"}, {"type": "custom.webinar", "lead_id": lead_id},
    ]})
    assert ok.status_code == 202 and ok.json() == {"accepted": 3}
    timeline = await client.get(f"/v1/leads/{lead_id}/activities", headers=admin_headers)
    assert {"page_view", "custom.webinar"} <= {a["type"] for a in timeline.json()["items"]}
    touchpoints = await client.get(f"/v1/leads/{lead_id}/touchpoints", headers=admin_headers)
    assert "yandex" in [t["source"] for t in touchpoints.json()["items"]]
    newcomer = await client.get("/v1/leads", headers=admin_headers, params={"email": "new.person@webinar.ru"})
    assert len(newcomer.json()["items"]) == 1
    anonymous = await client.post("/v1/events/batch", json={"events": [good]})
    assert anonymous.status_code == 401


async def test_events_posted_at_once_share_transactions_and_a_bad_one_fails_alone(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    """Single events that arrive together are committed together (group commit); each request
    still gets its own answer, and an event for an unknown lead spoils nobody else's."""
    import asyncio

    from core.metrics import INTAKE_BATCH

    await make_form(client, admin_headers)
    lead_id = (await client.post("/v1/forms/contact/submit", json={**GOOD, "_vid": VID})).json()["lead_id"]
    writer = {"authorization": f"Bearer {await make_key(db, 'leads:write')}"}
    def batches() -> tuple[float, float]:  # (transactions, events in them) of the event writer so far
        samples = {s.name: s.value for m in INTAKE_BATCH.collect() for s in m.samples
                   if s.labels.get("channel") == "event" and s.name.endswith(("_count", "_sum"))}
        return (next((v for k, v in samples.items() if k.endswith("_count")), 0.0),
                next((v for k, v in samples.items() if k.endswith("_sum")), 0.0))

    before = batches()
    posts = [client.post("/v1/events", json={"type": "download", "lead_id": lead_id,
                                             "properties": {"n": i}}, headers=writer) for i in range(30)]
    posts += [client.post("/v1/events", json=page_view(url=f"https://example.ru/p/{i}")) for i in range(30)]
    posts.insert(17, client.post("/v1/events", headers=writer,
                                 json={"type": "download", "lead_id": "00000000-0000-0000-0000-000000000000"}))
    answers = await asyncio.gather(*posts)
    assert [r.status_code for r in answers].count(202) == 60
    assert answers[17].status_code == 404 and answers[17].json()["error"]["field"] == "lead_id"
    stored = await activities(db)
    assert sorted(a.data["properties"]["n"] for a in stored if a.type == "download") == list(range(30))
    assert len({a.data["url"] for a in stored if a.type == "page_view"}) == 30
    assert {str(a.lead_id) for a in stored} == {lead_id}
    async with db.sessions() as session:
        events = list(await session.scalars(select(OutboxEvent).where(OutboxEvent.name == "lead.activity")))
    assert len(events) == 61  # the form's and the sixty events'
    transactions, grouped = (after - was for after, was in zip(batches(), before, strict=True))
    assert 0 < transactions < grouped  # fewer commits than events: they were grouped


async def test_tracker_events_written_in_one_group_record_what_they_record_one_by_one(
    db: Database, frozen_now: Any, settings: Settings
) -> None:
    """Page views of an unknown browser, of a known lead's browser, of a browser whose lead was
    merged into another and of an erased person's browser (forgotten at erasure), some arriving
    from an ad: written together, in a few statements for the whole group, they leave what
    `record_event` leaves one by one."""
    from collections import Counter

    from sqlalchemy import event as sa_event

    from leads.intake.events import EventIn, PostedEvent, record_event, record_posted
    from leads.intake.interaction import Origin
    from leads.merge import merge_leads
    from leads.models import Visitor
    from leads.privacy import erase_lead
    from leads.service import record_intake
    from tests.conftest import empty_tables

    browsers = {"anonymous": "a0000000000000001", "known": "b0000000000000001", "merged": "c0000000000000001",
                "erased": "d0000000000000001"}
    views = [
        page_view(visitor_id=browsers[who], url=f"https://example.ru/{who}/{i}",
                  **({"utm_source": "yandex", "referrer": "https://ya.ru/"} if i == 0 else {}))
        for i in range(3) for who in browsers
    ]

    async def prepare() -> None:
        async with db.sessions() as session:
            for who in ("known", "merged", "erased"):
                await record_intake(session, {"email": f"{who}@example.ru"}, Origin(channel="api",
                                    visitor_id=browsers[who]), "created")
            survivor = await record_intake(session, {"email": "survivor@example.ru"}, Origin(channel="api"), "created")
            merged = await session.scalar(select(Lead).where(Lead.email == "merged@example.ru"))
            erased = await session.scalar(select(Lead).where(Lead.email == "erased@example.ru"))
            assert merged is not None and erased is not None
            await merge_leads(session, survivor.lead.id, merged.id)
            await erase_lead(session, erased, settings)
            await session.commit()

    async def state() -> dict[str, Any]:
        async with db.sessions() as session:
            email = {lead.id: lead.email for lead in await session.scalars(select(Lead))}
            views = Counter((email.get(a.lead_id), a.visitor_id, a.data["url"], a.touchpoint_id is not None)
                            for a in await session.scalars(select(Activity).where(Activity.type == "page_view")))
            touches = Counter((email.get(t.lead_id), t.visitor_id, t.source)
                              for t in await session.scalars(select(Touchpoint).where(Touchpoint.channel == "event")))
            events = Counter(email.get(uuid.UUID(e.payload["lead_id"])) for e in await session.scalars(
                select(OutboxEvent).where(OutboxEvent.name == "lead.activity")))
            visitors = {v.visitor_id: email.get(v.lead_id) for v in await session.scalars(select(Visitor))}
        return {"views": views, "touches": touches, "events": events, "visitors": visitors}

    posted = [PostedEvent(EventIn.model_validate(v), "198.51.100.7", False, ["secret"]) for v in views]
    await prepare()
    async with db.sessions() as session:
        alone = [await record_event(session, p.event, p.ip, False, p.secrets) is not None for p in posted]
        await session.commit()
    one_by_one = await state()

    await empty_tables(db)
    await prepare()
    statements = 0

    def counted(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", counted)
    try:
        async with db.sessions() as session:
            together = await record_posted(session, posted)
            await session.commit()
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", counted)
    assert together == alone == [True] * len(views)
    assert await state() == one_by_one
    assert one_by_one["views"][("survivor@example.ru", browsers["merged"], "https://example.ru/merged/1", False)] == 1
    assert one_by_one["views"][(None, browsers["erased"], "https://example.ru/erased/1", False)] == 1  # forgotten
    assert one_by_one["touches"][("known@example.ru", browsers["known"], "yandex")] == 1
    assert statements <= 8  # not a few per page view
