"""Merging two leads that are one person."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select

from core.db import Database
from core.outbox import OutboxEvent
from leads.models import Segment, SegmentMember


async def _lead(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> dict:
    resp = await client.post("/v1/leads", json=body, headers=headers)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


async def test_merge_moves_the_other_timeline_and_fills_empty_fields(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    survivor = await _lead(client, admin_headers, email="ivan@example.com", first_name="Иван", tags=["vip"],
                           utm_source="yandex")
    other = await _lead(client, admin_headers, phone="+79123456789", first_name="Ваня", company="ООО Ромашка",
                        tags=["call"], utm_source="google",
                        consent=[{"purpose": "marketing", "wording": "Да"}])
    await client.post(f"/v1/leads/{other['id']}/notes", json={"text": "звонил"}, headers=admin_headers)
    async with db.sessions() as session:
        segment = Segment(name="s", filter={"all": []})
        session.add(segment)
        await session.flush()
        session.add(SegmentMember(segment_id=segment.id, lead_id=uuid.UUID(other["id"])))
        await session.commit()

    resp = await client.post(f"/v1/leads/{survivor['id']}/merge", json={"other_id": other["id"]}, headers=admin_headers)
    assert resp.status_code == 200, resp.text
    merged = resp.json()
    assert merged["id"] == survivor["id"]
    assert merged["first_name"] == "Иван"  # survivor keeps its own
    assert (merged["phone"], merged["company"]) == ("+79123456789", "ООО Ромашка")
    assert merged["tags"] == ["call", "vip"]

    timeline = (await client.get(f"/v1/leads/{survivor['id']}/activities", headers=admin_headers)).json()["items"]
    types = [a["type"] for a in timeline]
    assert types.count("api_created") == 2 and "note" in types and types[0] == "merged"
    touch = (await client.get(f"/v1/leads/{survivor['id']}/touchpoints", headers=admin_headers)).json()["items"]
    assert sorted(t["source"] for t in touch) == ["google", "yandex"]
    consents = (await client.get(f"/v1/leads/{survivor['id']}/consents", headers=admin_headers)).json()
    assert [c["purpose"] for c in consents] == ["marketing"]

    # The old id resolves to the survivor; the list shows one person.
    assert (await client.get(f"/v1/leads/{other['id']}", headers=admin_headers)).json()["id"] == survivor["id"]
    listed = (await client.get("/v1/leads", headers=admin_headers)).json()["items"]
    assert [x["id"] for x in listed] == [survivor["id"]]
    async with db.sessions() as session:
        members = list(await session.scalars(select(SegmentMember.lead_id)))
        event = await session.scalar(select(OutboxEvent).where(OutboxEvent.name == "lead.merged"))
    assert [str(m) for m in members] == [survivor["id"]]
    assert event is not None
    assert (event.payload["survivor_id"], event.payload["merged_id"]) == (survivor["id"], other["id"])


async def test_survivor_takes_the_email_of_the_other_when_it_has_none(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    survivor = await _lead(client, admin_headers, phone="+79123456789")
    other = await _lead(client, admin_headers, email="ivan@example.com")
    resp = await client.post(f"/v1/leads/{survivor['id']}/merge", json={"other_id": other["id"]}, headers=admin_headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["email"] == "ivan@example.com"
    # The person writes again: lands on the survivor, no new lead.
    again = await _lead(client, admin_headers, email="ivan@example.com")
    assert again["id"] == survivor["id"]


@pytest.mark.parametrize("case", ["self", "already_merged", "erased", "missing"])
async def test_merge_that_cannot_be_done_names_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], case: str
) -> None:
    a = await _lead(client, admin_headers, email="a@example.com")
    b = await _lead(client, admin_headers, email="b@example.com")
    c = await _lead(client, admin_headers, email="c@example.com")
    other = b["id"]
    if case == "self":
        other = a["id"]
    elif case == "already_merged":
        await client.post(f"/v1/leads/{c['id']}/merge", json={"other_id": b["id"]}, headers=admin_headers)
    elif case == "erased":
        assert (await client.delete(f"/v1/leads/{b['id']}", headers=admin_headers)).status_code == 204
    else:
        other = "00000000-0000-7000-8000-000000000000"
    resp = await client.post(f"/v1/leads/{a['id']}/merge", json={"other_id": other}, headers=admin_headers)
    assert resp.status_code == {"self": 422, "already_merged": 409, "erased": 409, "missing": 404}[case], resp.text
    assert resp.json()["error"]["field"] == "other_id"


async def test_two_merges_of_the_same_lead_at_once_let_only_one_win(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    import asyncio

    a = await _lead(client, admin_headers, email="a@example.com")
    b = await _lead(client, admin_headers, email="b@example.com")
    c = await _lead(client, admin_headers, email="c@example.com")
    first, second = await asyncio.gather(
        client.post(f"/v1/leads/{a['id']}/merge", json={"other_id": b["id"]}, headers=admin_headers),
        client.post(f"/v1/leads/{c['id']}/merge", json={"other_id": b["id"]}, headers=admin_headers),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    async with db.sessions() as session:
        merged = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.name == "lead.merged")
        )
    assert merged == 1


async def test_form_post_from_the_merged_away_email_lands_on_the_survivor_and_the_list_finds_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    from leads.models import Lead
    from tests.leads.test_forms import JSON_ACCEPT, make_form

    survivor = await _lead(client, admin_headers, email="a@example.com", phone="+79123456789")
    other = await _lead(client, admin_headers, email="m.b@example.com", phone="+79161234567")
    resp = await client.post(f"/v1/leads/{survivor['id']}/merge", json={"other_id": other["id"]}, headers=admin_headers)
    assert resp.status_code == 200, resp.text

    await make_form(client, admin_headers)
    posted = await client.post(
        "/v1/forms/contact/submit", headers=JSON_ACCEPT,
        json={"first_name": "Мария", "email": "M.B@example.com", "consent": "on"},
    )
    assert posted.status_code == 201, posted.text
    assert posted.json()["lead_id"] == survivor["id"]
    by_phone = await _lead(client, admin_headers, phone="8 916 123-45-67", city="Казань")
    assert by_phone["id"] == survivor["id"]
    # The survivor keeps its own address and number; the old ones only find it.
    assert (by_phone["email"], by_phone["phone"], by_phone["city"]) == ("a@example.com", "+79123456789", "Казань")

    for query in ("email=m.b%40example.com", "phone=%2B79161234567"):
        listed = (await client.get(f"/v1/leads?{query}", headers=admin_headers)).json()["items"]
        assert [x["id"] for x in listed] == [survivor["id"]], query
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 2


async def test_addresses_merged_twice_still_find_the_last_survivor(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    a = await _lead(client, admin_headers, email="a@example.com")
    b = await _lead(client, admin_headers, email="b@example.com")
    c = await _lead(client, admin_headers, email="c@example.com")
    await client.post(f"/v1/leads/{b['id']}/merge", json={"other_id": c["id"]}, headers=admin_headers)
    await client.post(f"/v1/leads/{a['id']}/merge", json={"other_id": b["id"]}, headers=admin_headers)
    for email in ("b@example.com", "c@example.com"):
        again = await _lead(client, admin_headers, email=email)
        assert (again["id"], again["email"]) == (a["id"], "a@example.com"), email


async def test_patch_to_a_merged_away_email_of_another_lead_is_409_naming_email(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    a = await _lead(client, admin_headers, email="a@example.com")
    b = await _lead(client, admin_headers, email="b@example.com")
    c = await _lead(client, admin_headers, email="c@example.com")
    await client.post(f"/v1/leads/{a['id']}/merge", json={"other_id": b["id"]}, headers=admin_headers)
    resp = await client.patch(f"/v1/leads/{c['id']}", json={"email": "b@example.com"}, headers=admin_headers)
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["field"] == "email"


async def test_merging_two_members_of_a_segment_counts_one_member(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    a = await _lead(client, admin_headers, email="a@example.com", country="RU")
    b = await _lead(client, admin_headers, email="b@example.com", country="RU")
    made = await client.post("/v1/segments", json={"name": "Россия", "filter": {"field": "country", "op": "eq",
                                                                              "value": "RU"}}, headers=admin_headers)
    assert made.status_code == 201, made.text
    segment_id = made.json()["id"]
    assert (await client.post(f"/v1/segments/{segment_id}/refresh", headers=admin_headers)).json()["member_count"] == 2
    await client.post(f"/v1/leads/{a['id']}/merge", json={"other_id": b["id"]}, headers=admin_headers)
    shown = (await client.get(f"/v1/segments/{segment_id}", headers=admin_headers)).json()
    assert shown["refreshed_member_count"] == 1
    async with db.sessions() as session:
        left = [e.payload for e in await session.scalars(select(OutboxEvent).where(OutboxEvent.name == "segment.left"))]
    assert left == [{"segment_id": segment_id, "lead_id": b["id"]}]
