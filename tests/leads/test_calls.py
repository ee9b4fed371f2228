from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from core import clock
from core.db import Database
from core.outbox import OutboxEvent
from core.tokens import hmac_sha256
from leads.models import Activity, Lead, Touchpoint
from tests.conftest import make_key

SECRET = "call-secret"  # the `settings` fixture's call_webhook_secret


def signed(body: bytes, content_type: str = "application/json", at: datetime | None = None,
           secret: str = SECRET) -> dict[str, str]:
    stamp = str(int((at or clock.now()).timestamp()))
    return {
        "content-type": content_type,
        "x-nurture-timestamp": stamp,
        "x-nurture-signature": "sha256=" + hmac_sha256(secret, stamp.encode() + b"." + body),
    }


async def post_call(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await client.post("/v1/calls", content=body, headers=signed(body))


async def add_number(client: httpx.AsyncClient, db: Database, **fields: Any) -> httpx.Response:
    key = await make_key(db, "forms:write")
    return await client.post("/v1/tracking-numbers", json=fields, headers={"authorization": f"Bearer {key}"})


async def count(db: Database, table: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def events(db: Database, name: str) -> list[dict[str, Any]]:
    async with db.sessions() as session:
        return [e.payload for e in await session.scalars(select(OutboxEvent).where(OutboxEvent.name == name))]


async def test_signed_call_creates_lead_and_touchpoint_with_the_tracking_numbers_campaign(
    client: httpx.AsyncClient, db: Database, frozen_now: datetime
) -> None:
    created = await add_number(
        client, db, number="8 (495) 123-45-67", campaign="spring-sale", source="yandex", medium="cpc", label="Директ"
    )
    assert created.status_code == 201, created.text
    assert created.json()["number"] == "+74951234567"

    resp = await post_call(client, {
        "caller": "8 912 345-67-89", "tracking_number": "+7 495 123 45 67", "status": "answered",
        "duration": 95, "started_at": "2026-03-02T09:25:00Z", "call_id": "pbx-1",
        "recording_url": "https://pbx.example.ru/rec/1.mp3",
    })
    assert resp.status_code == 201, resp.text
    ids = resp.json()

    async with db.sessions() as session:
        lead = await session.get(Lead, uuid.UUID(ids["lead_id"]))
        activity = await session.get(Activity, uuid.UUID(ids["activity_id"]))
        assert lead is not None and activity is not None
        touchpoint = await session.scalar(select(Touchpoint).where(Touchpoint.lead_id == lead.id))
    assert touchpoint is not None
    assert lead.phone == "+79123456789" and lead.source_channel == "call"
    assert (touchpoint.channel, touchpoint.campaign, touchpoint.source, touchpoint.medium) == (
        "call", "spring-sale", "yandex", "cpc"
    )
    assert activity.type == "call_answered"
    assert activity.data["duration"] == 95 and activity.data["tracking_number"] == "+74951234567"
    assert activity.data["recording_url"] == "https://pbx.example.ru/rec/1.mp3"
    assert activity.occurred_at == frozen_now - timedelta(minutes=5)
    assert await events(db, "call.missed") == []


async def test_missed_call_posted_as_asterisk_form_emits_call_missed_for_a_callback(
    client: httpx.AsyncClient, db: Database, frozen_now: datetime
) -> None:
    await add_number(client, db, number="+74951234567", campaign="outdoor")
    body = urlencode({
        "callerid": "+79123456789", "did": "74951234567", "disposition": "NO ANSWER",
        "uniqueid": "1700000000.42", "calldate": str(int(frozen_now.timestamp())), "billsec": "0",
    }).encode()
    resp = await client.post("/v1/calls", content=body, headers=signed(body, "application/x-www-form-urlencoded"))
    assert resp.status_code == 201, resp.text

    async with db.sessions() as session:
        activity = await session.get(Activity, uuid.UUID(resp.json()["activity_id"]))
    assert activity is not None and activity.type == "call_missed"
    [missed] = await events(db, "call.missed")
    assert missed == {
        "lead_id": resp.json()["lead_id"], "activity_id": resp.json()["activity_id"],
        "tracking_number": "+74951234567", "campaign": "outdoor", "started_at": frozen_now.isoformat(),
        "call_id": "1700000000.42",
    }


async def test_busy_counts_as_missed_and_a_known_caller_keeps_one_lead(
    client: httpx.AsyncClient, db: Database
) -> None:
    first = await post_call(client, {"caller": "+79123456789", "status": "ANSWER", "duration": "30"})
    second = await post_call(client, {"caller": "89123456789", "status": "busy"})
    assert first.status_code == second.status_code == 201
    assert first.json()["lead_id"] == second.json()["lead_id"]
    assert await count(db, Lead) == 1
    assert len(await events(db, "call.missed")) == 1


async def test_call_to_an_unknown_number_is_still_recorded_with_source_phone(
    client: httpx.AsyncClient, db: Database
) -> None:
    resp = await post_call(client, {"caller": "+79123456789", "tracking_number": "+74990000000", "status": "answered"})
    assert resp.status_code == 201, resp.text
    async with db.sessions() as session:
        touchpoint = await session.scalar(select(Touchpoint))
    assert touchpoint is not None
    assert (touchpoint.source, touchpoint.campaign) == ("phone", None)


async def test_bad_or_missing_signature_gets_401_naming_the_header_and_no_lead(
    client: httpx.AsyncClient, db: Database
) -> None:
    body = json.dumps({"caller": "+79123456789", "status": "answered"}).encode()
    forged = await client.post("/v1/calls", content=body, headers=signed(body, secret="guessed"))
    assert forged.status_code == 401
    assert forged.json()["error"]["field"] == "X-Nurture-Signature"

    tampered = await client.post("/v1/calls", content=body.replace(b"answered", b"missed"), headers=signed(body))
    assert tampered.status_code == 401

    unsigned = await client.post("/v1/calls", content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 401
    assert unsigned.json()["error"]["field"] == "X-Nurture-Timestamp"
    assert await count(db, Lead) == 0


async def test_replay_outside_the_five_minute_window_gets_401(
    client: httpx.AsyncClient, db: Database, frozen_now: datetime
) -> None:
    body = json.dumps({"caller": "+79123456789", "status": "answered"}).encode()
    headers = signed(body)
    clock.advance(timedelta(minutes=6))
    stale = await client.post("/v1/calls", content=body, headers=headers)
    assert stale.status_code == 401
    assert stale.json()["error"]["field"] == "X-Nurture-Timestamp"

    early = await client.post("/v1/calls", content=body, headers=signed(body, at=clock.now() + timedelta(minutes=6)))
    assert early.status_code == 401
    assert await count(db, Lead) == 0

    fresh = await client.post("/v1/calls", content=body, headers=signed(body))
    assert fresh.status_code == 201


async def test_retried_webhook_with_the_same_call_id_records_the_call_once(
    client: httpx.AsyncClient, db: Database
) -> None:
    payload = {"caller": "+79123456789", "status": "no_answer", "call_id": "asterisk-77"}
    first = await post_call(client, payload)
    retry = await post_call(client, payload)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == first.json()
    assert await count(db, Activity) == 1
    assert len(await events(db, "call.missed")) == 1


async def test_replayed_signed_call_without_call_id_is_recorded_once(
    client: httpx.AsyncClient, db: Database, frozen_now: datetime
) -> None:
    body = json.dumps({"caller": "+79123456789", "status": "missed"}).encode()
    headers = signed(body)
    first = await client.post("/v1/calls", content=body, headers=headers)
    clock.advance(timedelta(minutes=4))  # still inside the signature's five minutes
    replay = await client.post("/v1/calls", content=body, headers=headers)
    assert (first.status_code, replay.status_code) == (201, 200), replay.text
    assert replay.json() == first.json()
    assert await count(db, Activity) == 1
    assert len(await events(db, "call.missed")) == 1


async def test_retry_without_call_id_of_the_same_call_is_recorded_once_and_another_call_is_not_lost(
    client: httpx.AsyncClient, db: Database, frozen_now: datetime
) -> None:
    call = {"caller": "+79123456789", "tracking_number": "+74951234567", "status": "answered",
            "started_at": "2026-03-02T09:20:00Z", "duration": 40}
    first = await post_call(client, call)
    clock.advance(timedelta(seconds=30))
    retry = await post_call(client, call)  # signed again with a fresh timestamp
    later = await post_call(client, {**call, "started_at": "2026-03-02T09:28:00Z"})
    assert (first.status_code, retry.status_code, later.status_code) == (201, 200, 201)
    assert retry.json() == first.json()
    assert later.json()["activity_id"] != first.json()["activity_id"]
    assert later.json()["lead_id"] == first.json()["lead_id"]
    assert await count(db, Activity) == 2


@pytest.mark.parametrize("caller", ["anonymous", "Unknown", "PRIVATE", "withheld", "", None, "Скрытый номер",
                                    "+266696687"])
async def test_missed_call_from_a_withheld_number_is_recorded_for_the_campaign_without_a_lead(
    client: httpx.AsyncClient, db: Database, frozen_now: datetime, caller: str | None
) -> None:
    await add_number(client, db, number="+74951234567", campaign="radio")
    resp = await post_call(client, {"caller": caller, "tracking_number": "+74951234567", "status": "no answer",
                                    "call_id": "hidden-1"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["lead_id"] is None
    async with db.sessions() as session:
        activity = await session.get(Activity, uuid.UUID(resp.json()["activity_id"]))
        touchpoint = await session.scalar(select(Touchpoint))
    assert activity is not None and touchpoint is not None
    assert (activity.type, activity.lead_id, activity.touchpoint_id) == ("call_missed", None, touchpoint.id)
    assert activity.data["caller"] is None and activity.data["withheld"] is True
    assert (touchpoint.channel, touchpoint.campaign, touchpoint.lead_id) == ("call", "radio", None)
    assert await count(db, Lead) == 0
    [missed] = await events(db, "call.missed")
    assert missed["lead_id"] is None and missed["activity_id"] == resp.json()["activity_id"]
    assert missed["campaign"] == "radio"

    retry = await post_call(client, {"caller": caller, "tracking_number": "+74951234567", "status": "no answer",
                                     "call_id": "hidden-1"})
    assert (retry.status_code, retry.json()) == (200, resp.json())
    assert await count(db, Activity) == 1


async def test_answered_call_from_a_withheld_number_is_recorded_and_asks_for_no_callback(
    client: httpx.AsyncClient, db: Database
) -> None:
    resp = await post_call(client, {"caller": "anonymous", "status": "answered", "duration": 60})
    assert resp.status_code == 201, resp.text
    assert resp.json()["lead_id"] is None
    assert await count(db, Activity) == 1 and await count(db, Lead) == 0
    assert await events(db, "call.missed") == []


async def test_call_that_fails_after_its_lead_is_written_leaves_nothing_and_gets_no_2xx(
    app: Any, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import leads.intake.calls

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the outbox is unavailable")

    # call.missed is the last thing written: the lead, touchpoint, activity and lead events are in.
    monkeypatch.setattr(leads.intake.calls, "emit", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        resp = await post_call(http, {"caller": "+79123456789", "status": "missed"})
    assert resp.status_code >= 500
    for table in (Lead, Touchpoint, Activity, OutboxEvent):
        assert await count(db, table) == 0, table


async def test_caller_that_is_not_a_phone_number_gets_422_naming_caller_and_no_lead(
    client: httpx.AsyncClient, db: Database
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"caller": "Иван с выставки", "status": "answered"}, "caller"),
        ({"caller": "12", "status": "answered"}, "caller"),
        ({"status": "answered"}, "caller"),
        ({"caller": "+79123456789", "status": "maybe"}, "status"),
        ({"caller": "+79123456789", "status": "missed", "recording_url": "ftp://pbx/1.wav"}, "recording_url"),
        ({"caller": "+79123456789", "status": "missed", "duration": -5}, "duration"),
        ({"caller": "+79123456789", "status": "missed", "started_at": "yesterday-ish"}, "started_at"),
    ]
    for payload, field in cases:
        resp = await post_call(client, payload)
        assert resp.status_code == 422, (payload, resp.text)
        assert resp.json()["error"]["field"] == field
    assert await count(db, Lead) == 0
    assert await count(db, Activity) == 0


async def test_call_time_with_no_utc_value_gets_422_naming_started_at_and_no_lead(
    client: httpx.AsyncClient, db: Database
) -> None:
    resp = await post_call(
        client, {"caller": "+79123456789", "status": "answered", "started_at": "0001-01-01T00:00:01+02:00"}
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "started_at"
    assert await count(db, Lead) == 0


async def test_call_with_wrong_content_type_gets_415_and_oversized_body_413(client: httpx.AsyncClient) -> None:
    body = b"<call caller='+79123456789'/>"
    resp = await client.post("/v1/calls", content=body, headers=signed(body, "application/xml"))
    assert resp.status_code == 415
    big = b"{" + b" " * (1024 * 1024) + b"}"
    assert (await client.post("/v1/calls", content=big, headers=signed(big))).status_code == 413


async def test_tracking_numbers_list_delete_and_duplicates_get_409(client: httpx.AsyncClient, db: Database) -> None:
    key = {"authorization": f"Bearer {await make_key(db, 'forms:write')}"}
    first = await client.post("/v1/tracking-numbers", json={"number": "+7 495 123-45-67", "campaign": "a"}, headers=key)
    again = await client.post("/v1/tracking-numbers", json={"number": "84951234567", "campaign": "b"}, headers=key)
    assert first.status_code == 201 and again.status_code == 409
    assert again.json()["error"]["field"] == "number"
    bad = await client.post("/v1/tracking-numbers", json={"number": "12"}, headers=key)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "number"

    listed = await client.get("/v1/tracking-numbers", headers=key)
    assert [n["number"] for n in listed.json()["items"]] == ["+74951234567"]
    number_id = first.json()["id"]
    assert (await client.delete(f"/v1/tracking-numbers/{number_id}", headers=key)).status_code == 204
    assert (await client.delete(f"/v1/tracking-numbers/{number_id}", headers=key)).status_code == 404
    assert (await client.get("/v1/tracking-numbers", headers=key)).json()["items"] == []

    reader = {"authorization": f"Bearer {await make_key(db, 'leads:write')}"}
    assert (await client.get("/v1/tracking-numbers", headers=reader)).status_code == 403


async def test_tracking_number_with_a_nul_character_gets_422_naming_the_field_and_is_not_added(
    client: httpx.AsyncClient, db: Database
) -> None:
    key = {"authorization": f"Bearer {await make_key(db, 'forms:write')}"}
    for field in ("campaign", "source", "medium", "label"):
        resp = await client.post("/v1/tracking-numbers", json={"number": "+74951234567", field: "a\x00b"}, headers=key)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == field
    assert (await client.get("/v1/tracking-numbers", headers=key)).json()["items"] == []


FIELDS = ["caller", "tracking_number", "status", "duration", "started_at", "recording_url", "call_id"]
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40),
    st.sampled_from(["+79123456789", "answered", "missed", "NO ANSWER", "https://x.ru/a", "1700000000"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=7).map(lambda d: json.dumps(d).encode()),
    ),
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
    sign=st.booleans(),
)
async def test_any_body_posted_to_calls_gets_2xx_or_4xx_never_5xx(
    client: httpx.AsyncClient, body: bytes, content_type: str, sign: bool
) -> None:
    headers = signed(body, content_type) if sign else {"content-type": content_type}
    resp = await client.post("/v1/calls", content=body, headers=headers)
    assert resp.status_code < 500, resp.text
    if not sign:
        assert resp.status_code == 401
