"""Export and erasure (GDPR / 152-FZ)."""

from __future__ import annotations

import json
import uuid

import httpx
from sqlalchemy import func, select

from core import clock
from core.db import Database
from core.outbox import OutboxEvent
from leads.models import Activity, InboundEmail, Lead, Touchpoint, Visitor

PERSONAL = ["ivan.petrov@example.com", "+79123456789", "Иван", "Петров", "Ромашка", "Казань", "1990-05-17",
            "visitor-abc", "секретный проект", "198.51.100.4", "Re: цены", "utm-term-personal"]


async def _person(client: httpx.AsyncClient, headers: dict[str, str], db: Database) -> dict:
    resp = await client.post(
        "/v1/custom-fields", json={"key": "project", "label": "Проект", "type": "text"}, headers=headers
    )
    assert resp.status_code == 201, resp.text
    resp = await client.post(
        "/v1/leads",
        json={
            "email": "ivan.petrov@example.com", "phone": "+7 912 345-67-89", "first_name": "Иван",
            "last_name": "Петров", "company": "ООО Ромашка", "city": "Казань", "birthday": "1990-05-17",
            "country": "RU", "custom": {"project": "секретный проект"}, "tags": ["vip"], "visitor_id": "visitor-abc",
            "utm_source": "yandex", "utm_campaign": "spring", "utm_term": "utm-term-personal",
            "consent": [{"purpose": "marketing", "wording": "Согласен"}],
        },
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    lead = resp.json()
    await client.post(f"/v1/leads/{lead['id']}/consents", json={"purpose": "calls", "ip": "198.51.100.4"},
                      headers=headers)
    await client.post(f"/v1/leads/{lead['id']}/notes", json={"text": "Иван хочет секретный проект"}, headers=headers)
    async with db.sessions() as session:
        session.add(InboundEmail(
            kind="inquiry", message_id="<m1@mail.example.org>", mail_from="ivan.petrov@example.com",
            subject="Re: цены", lead_id=uuid.UUID(lead["id"]), details={"body": "Иван Петров"},
        ))
        await session.commit()
    return lead


async def test_export_holds_profile_touchpoints_consents_and_emails(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    lead = await _person(client, admin_headers, db)
    resp = await client.get(f"/v1/leads/{lead['id']}/export", headers=admin_headers)
    assert resp.status_code == 200
    assert "attachment" in resp.headers["content-disposition"]
    data = resp.json()
    assert data["lead"]["email"] == "ivan.petrov@example.com"
    assert data["lead"]["custom"] == {"project": "секретный проект"}
    assert data["lead"]["tags"] == ["vip"]
    assert [v["visitor_id"] for v in data["visitors"]] == ["visitor-abc"]
    assert [(t["source"], t["campaign"]) for t in data["touchpoints"]] == [("yandex", "spring")]
    assert sorted(c["purpose"] for c in data["consents"]) == ["calls", "marketing"]
    assert data["inbound_emails"][0]["subject"] == "Re: цены"
    assert {"note", "api_created"} <= {a["type"] for a in data["activities"]}


async def test_erase_leaves_no_personal_value_and_keeps_the_counts(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    lead = await _person(client, admin_headers, db)
    async with db.sessions() as session:
        before = [await session.scalar(select(func.count()).select_from(t)) for t in (Lead, Touchpoint)]

    assert (await client.delete(f"/v1/leads/{lead['id']}", headers=admin_headers)).status_code == 204
    assert (await client.delete(f"/v1/leads/{lead['id']}", headers=admin_headers)).status_code == 204

    export = (await client.get(f"/v1/leads/{lead['id']}/export", headers=admin_headers)).text
    for value in PERSONAL:
        assert value not in export, value
    data = json.loads(export)
    assert data["lead"]["erased_at"] and data["lead"]["source_channel"] == "api"
    assert [(t["source"], t["campaign"]) for t in data["touchpoints"]] == [("yandex", "spring")]
    assert {"note", "api_created", "erased"} <= {a["type"] for a in data["activities"]}

    shown = (await client.get(f"/v1/leads/{lead['id']}", headers=admin_headers)).json()
    assert shown["erased_at"] and shown["email"] is None and shown["first_name"] is None and shown["custom"] == {}
    assert (await client.get("/v1/leads", headers=admin_headers)).json()["items"] == []
    async with db.sessions() as session:
        after = [await session.scalar(select(func.count()).select_from(t)) for t in (Lead, Touchpoint)]
        assert await session.scalar(select(func.count()).select_from(Visitor)) == 0
        notes = list(await session.scalars(select(Activity.data).where(Activity.type == "note")))
        erased_events = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.name == "lead.erased")
        )
    assert after == before
    assert notes == [{}]
    assert erased_events == 1


async def test_erased_person_is_not_silently_re_added_without_new_consent(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    lead = (await client.post("/v1/leads", json={"email": "gone@example.com"}, headers=admin_headers)).json()
    await client.delete(f"/v1/leads/{lead['id']}", headers=admin_headers)

    again = await client.post("/v1/leads", json={"email": "Gone@example.com"}, headers=admin_headers)
    assert again.status_code == 409
    assert again.json()["error"]["field"] == "email"

    back = await client.post(
        "/v1/leads", json={"email": "gone@example.com", "consent": [{"purpose": "marketing"}]}, headers=admin_headers
    )
    assert back.status_code == 201
    assert back.json()["id"] != lead["id"]


async def test_erasing_a_survivor_also_erases_the_lead_merged_into_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    a = (await client.post("/v1/leads", json={"email": "a@example.com"}, headers=admin_headers)).json()
    b = (await client.post("/v1/leads", json={"phone": "+79123456789", "first_name": "Борис"},
                           headers=admin_headers)).json()
    await client.post(f"/v1/leads/{a['id']}/merge", json={"other_id": b["id"]}, headers=admin_headers)
    before = (await client.get(f"/v1/leads/{a['id']}/export", headers=admin_headers)).json()
    assert [m["first_name"] for m in before["merged_leads"]] == ["Борис"]

    await client.delete(f"/v1/leads/{a['id']}", headers=admin_headers)
    export = (await client.get(f"/v1/leads/{a['id']}/export", headers=admin_headers)).text
    for value in ("a@example.com", "+79123456789", "Борис"):
        assert value not in export


async def test_erasing_a_survivor_forgets_the_merged_away_email_yet_still_recognises_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    from leads.models import LeadAlias

    a = (await client.post("/v1/leads", json={"email": "a@example.com"}, headers=admin_headers)).json()
    b = (await client.post("/v1/leads", json={"email": "old.b@example.com", "phone": "+79123456789"},
                           headers=admin_headers)).json()
    await client.post(f"/v1/leads/{a['id']}/merge", json={"other_id": b["id"]}, headers=admin_headers)
    held = (await client.get(f"/v1/leads/{a['id']}/export", headers=admin_headers)).json()
    assert [(x["kind"], x["value"]) for x in held["merged_addresses"]] == [("email", "old.b@example.com")]
    assert (await client.delete(f"/v1/leads/{a['id']}", headers=admin_headers)).status_code == 204

    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LeadAlias)) == 0
    export = (await client.get(f"/v1/leads/{a['id']}/export", headers=admin_headers)).text
    assert "old.b@example.com" not in export and "+79123456789" not in export
    assert (await client.get("/v1/leads?email=old.b%40example.com", headers=admin_headers)).json()["items"] == []
    again = await client.post("/v1/leads", json={"email": "old.b@example.com"}, headers=admin_headers)
    assert again.status_code == 409 and again.json()["error"]["field"] == "email"


async def test_erase_blanks_personal_values_in_the_outbox_but_keeps_names_ids_and_times(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    from tests.leads.test_calls import post_call
    from tests.leads.test_forms import GOOD, JSON_ACCEPT, make_form
    from tests.leads.test_inbound_email import message

    await make_form(client, admin_headers, double_opt_in=True)
    posted = await client.post("/v1/forms/contact/submit", json=GOOD, headers=JSON_ACCEPT)
    assert posted.status_code == 201, posted.text
    lead_id = posted.json()["lead_id"]
    call = await post_call(client, {"caller": "+79123456789", "status": "missed", "started_at": "2026-03-02T09:25:00Z"})
    assert call.status_code == 201 and call.json()["lead_id"] == lead_id, call.text
    mail_headers = {**admin_headers, "content-type": "message/rfc822"}
    reply = message(sender="maria@example.ru", subject="Re: предложение для Марии Ивановой",
                    Auto_Submitted="auto-replied")
    mail = await client.post("/v1/inbound/email", content=reply, headers=mail_headers)
    assert mail.status_code == 201 and mail.json()["lead_id"] == lead_id, mail.text
    async with db.sessions() as session:
        # A row written before emitters kept to ids (with the caller's number), already relayed: it
        # must be scrubbed as well (and then read as a call.missed like any other).
        legacy = OutboxEvent(name="call.missed", created_at=clock.now(), payload={
            "lead_id": lead_id, "activity_id": call.json()["activity_id"], "campaign": None,
            "started_at": "2026-03-02T09:25:00+00:00", "caller": "+79123456789", "call_id": "pbx-7",
        })
        legacy.relayed_at = legacy.created_at
        session.add(legacy)
        await session.commit()
        before = {e.id: e for e in await session.scalars(select(OutboxEvent))}

    assert (await client.delete(f"/v1/leads/{lead_id}", headers=admin_headers)).status_code == 204
    async with db.sessions() as session:
        after = {e.id: e for e in await session.scalars(select(OutboxEvent))}
    dumped = json.dumps([e.payload for e in after.values()], ensure_ascii=False)
    for value in ("maria@example.ru", "+79123456789", "Мари", "предложение"):
        assert value not in dumped, value
    for event_id, event in before.items():
        kept = after[event_id]
        assert (kept.name, kept.created_at) == (event.name, event.created_at)
        if "lead_id" in event.payload:
            assert kept.payload["lead_id"] == event.payload["lead_id"]
    optin = next(e for e in after.values() if e.name == "lead.optin_requested")
    assert {"lead_id", "consent_id"} <= set(optin.payload) and "email" not in optin.payload


async def test_erase_takes_the_person_out_of_segment_counts_and_announces_leaving(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    lead = await _person(client, admin_headers, db)
    made = await client.post("/v1/segments", json={"name": "Россия", "filter": {"field": "country", "op": "eq",
                                                                              "value": "RU"}}, headers=admin_headers)
    segment_id = made.json()["id"]
    refreshed = await client.post(f"/v1/segments/{segment_id}/refresh", headers=admin_headers)
    assert refreshed.json()["member_count"] == 1

    assert (await client.delete(f"/v1/leads/{lead['id']}", headers=admin_headers)).status_code == 204
    shown = (await client.get(f"/v1/segments/{segment_id}", headers=admin_headers)).json()
    assert shown["refreshed_member_count"] == 0
    async with db.sessions() as session:
        left = [e.payload for e in await session.scalars(select(OutboxEvent).where(OutboxEvent.name == "segment.left"))]
    assert left == [{"segment_id": segment_id, "lead_id": lead["id"]}]
    # A refresh afterwards finds nothing more to announce.
    again = (await client.post(f"/v1/segments/{segment_id}/refresh", headers=admin_headers)).json()
    assert (again["entered"], again["left"]) == (0, 0)


async def _their_mail_and_scores(client: httpx.AsyncClient, headers: dict[str, str], db: Database,
                                 lead_id: uuid.UUID) -> None:
    """What the other domains come to hold on the person: a message and the mail captured for it, a
    bounce and a suppression of their address, scores, score entries and a stage a rep set by hand."""
    from channels.models import Bounce, CapturedMail, Message, Suppression
    from core import clock
    from tests.pipeline import run_events

    resp = await client.post("/v1/events", json={"type": "download", "lead_id": str(lead_id),
                                                 "url": "https://example.ru/price.pdf"}, headers=headers)
    assert resp.status_code in (201, 202), resp.text
    await run_events(db)  # scoring: the person's score and its entries
    resp = await client.post(f"/v1/leads/{lead_id}/stage",
                             json={"stage": "sql", "reason": "Иван хочет секретный проект"}, headers=headers)
    assert resp.status_code == 200, resp.text
    now = clock.now()
    async with db.sessions() as session:
        message = Message(
            idempotency_key="test:privacy", channel="email", kind="marketing", lead_id=lead_id,
            recipient="ivan.petrov@example.com", template="welcome", state="sent", sent_at=now,
            payload={"context": {"greeting": "Иван"}}, response="250 ok",
        )
        session.add(message)
        await session.flush()
        session.add(CapturedMail(
            message_id=message.id, envelope_from="news@example.org", recipient="ivan.petrov@example.com",
            subject="Иван, для вас", raw=b"To: ivan.petrov@example.com\r\nSubject: x\r\n\r\nHello", size=50,
            received_at=now,
        ))
        session.add(Bounce(kind="bounce", address="ivan.petrov@example.com", message_id=message.id, lead_id=lead_id,
                           status="4.2.2", reply_code="452", reason="mailbox_full", hard=False,
                           diagnostic="452 ivan.petrov@example.com mailbox full", occurred_at=now))
        session.add(Suppression(channel="email", address="ivan.petrov@example.com", topic="", reason="unsubscribed",
                                lead_id=lead_id, message_id=message.id, created_at=now))
        await session.commit()


async def test_export_holds_what_every_domain_holds_on_the_person(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    lead = await _person(client, admin_headers, db)
    await _their_mail_and_scores(client, admin_headers, db, uuid.UUID(lead["id"]))

    data = (await client.get(f"/v1/leads/{lead['id']}/export", headers=admin_headers)).json()

    assert [(m["recipient"], m["template"], m["state"]) for m in data["messages"]] == [
        ("ivan.petrov@example.com", "welcome", "sent")
    ]
    assert [(m["subject"], "Hello" in m["raw"]) for m in data["captured_mail"]] == [("Иван, для вас", True)]
    assert [(b["address"], b["reason"]) for b in data["bounces"]] == [("ivan.petrov@example.com", "mailbox_full")]
    assert [(s["address"], s["reason"]) for s in data["suppressions"]] == [("ivan.petrov@example.com", "unsubscribed")]
    assert {s["stage"] for s in data["scores"]} == {"sql"}
    assert data["score_entries"] and all(e["lead_id"] == lead["id"] for e in data["score_entries"])
    assert ("Иван хочет секретный проект", "sql") in {(c["reason"], c["to_stage"]) for c in data["stage_history"]}


async def test_erasure_reaches_every_domain_in_the_same_request(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database
) -> None:
    """No worker runs here: what the person's messages, mail, bounces and suppressions held is gone
    as soon as the erase is answered; the suppression keeps only the address's keyed hash."""
    lead = await _person(client, admin_headers, db)
    await _their_mail_and_scores(client, admin_headers, db, uuid.UUID(lead["id"]))

    assert (await client.delete(f"/v1/leads/{lead['id']}", headers=admin_headers)).status_code == 204

    export = (await client.get(f"/v1/leads/{lead['id']}/export", headers=admin_headers)).text
    for value in [*PERSONAL, "Иван, для вас", "mailbox full", "Иван хочет"]:
        assert value not in export, value
    data = json.loads(export)
    assert [(m["recipient"], m["state"]) for m in data["messages"]] == [("erased", "sent")]
    assert data["captured_mail"] == []
    assert [s["address"].startswith("hash:") for s in data["suppressions"]] == [True]
    assert [b["address"].startswith("hash:") for b in data["bounces"]] == [True]
    assert {c["to_stage"] for c in data["stage_history"]} >= {"sql"}
