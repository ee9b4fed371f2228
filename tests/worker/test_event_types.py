"""Typed events: the outbox takes only a declared payload type, every declared event is in the
catalogue (and at GET /v1/events/catalog) with its JSON Schema, and a payload blanked by an erasure
still reads as its type."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from app.domains import DOMAINS
from core import domains
from core.auth import Scope
from core.db import Database
from core.domains import Domain, event_types
from core.events import Event, EventPayload
from core.outbox import emit, emit_many, outbox_row
from leads import events as lead_events
from leads.privacy import LEAD_KEYS, blanked
from scoring import events as scoring_events
from tests.conftest import make_key, undeclared_events

LEAD, OTHER, THING = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

# One payload of each declared event, every field filled (a new event adds its own here).
SAMPLES: list[EventPayload] = [
    lead_events.LeadCreated(lead_id=LEAD, channel="form", campaign="spring"),
    lead_events.LeadUpdated(lead_id=LEAD, changed=["city", "custom.budget"], channel="form", campaign="spring"),
    lead_events.LeadActivity(lead_id=LEAD, activity_id=THING, type="form_submitted", occurred_at=AT),
    lead_events.OptinRequested(lead_id=LEAD, purpose="marketing", form="contact", consent_id=THING),
    lead_events.LeadMerged(survivor_id=LEAD, merged_id=OTHER, filled=["phone"]),
    lead_events.LeadErased(lead_id=LEAD, merged_ids=[OTHER]),
    lead_events.ConsentWithdrawn(lead_id=LEAD, purpose="marketing"),
    lead_events.CallMissed(lead_id=LEAD, activity_id=THING, tracking_number="+74951234567", campaign="radio",
                           started_at=AT, call_id="pbx-7"),
    lead_events.EmailBounced(inbound_email_id=THING, lead_id=LEAD),
    lead_events.EmailComplained(inbound_email_id=THING, lead_id=LEAD),
    lead_events.EmailAutoReplied(inbound_email_id=THING, lead_id=None),
    lead_events.SegmentEntered(segment_id=THING, lead_id=LEAD),
    lead_events.SegmentLeft(segment_id=THING, lead_id=LEAD),
    scoring_events.StageChanged(lead_id=LEAD, from_stage="lead", to_stage="mql", score=52.5, grade="A",
                                reason="score 52.5 ≥ 50, grade A"),
    scoring_events.LeadQualified(lead_id=LEAD, score=52.5, grade="A", reason="score 52.5 ≥ 50, grade A"),
    scoring_events.RescoreDue(version=2, after=LEAD),
]


def stored(payload: EventPayload) -> dict[str, Any]:
    return outbox_row(payload, AT)["payload"]  # type: ignore[no-any-return]


def test_the_samples_cover_the_catalogue() -> None:
    assert sorted(type(p).name for p in SAMPLES) == sorted(event_types())


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: type(p).name)
def test_a_payload_is_stored_as_json_and_reads_back_as_its_type(payload: EventPayload) -> None:
    row = outbox_row(payload, AT)
    assert row["name"] == type(payload).name
    assert "erased" not in row["payload"]
    assert all(isinstance(v, str | int | float | list | None) for v in row["payload"].values())
    event = Event(id=uuid.uuid4(), name=row["name"], payload=row["payload"], created_at=AT)
    assert event.read(type(payload)) == payload


ABOUT_A_PERSON = [p for p in SAMPLES if set(stored(p)) & set(LEAD_KEYS)]  # what an erasure looks for


@pytest.mark.parametrize("payload", ABOUT_A_PERSON, ids=lambda p: type(p).name)
def test_a_payload_blanked_by_an_erasure_still_reads_as_its_type(payload: EventPayload) -> None:
    after = blanked(stored(payload))
    assert type(payload).model_validate(after).erased == (after != stored(payload))


def test_stored_ids_and_times_keep_the_shape_the_outbox_always_had() -> None:
    payload = stored(lead_events.CallMissed(lead_id=LEAD, activity_id=THING, campaign=None, started_at=AT))
    assert payload == {
        "lead_id": str(LEAD), "activity_id": str(THING), "campaign": None, "started_at": "2026-03-02T09:30:00+00:00",
        "tracking_number": None, "call_id": None,
    }
    assert stored(scoring_events.StageChanged(lead_id=LEAD, from_stage="lead", to_stage="mql"))["from"] == "lead"


def test_reading_an_event_as_another_type_is_refused() -> None:
    event = Event(id=uuid.uuid4(), name="lead.created", payload=stored(SAMPLES[0]), created_at=AT)
    with pytest.raises(TypeError, match="lead.created"):
        event.read(lead_events.LeadActivity)


class LooksLikeAnActivity(BaseModel):
    lead_id: uuid.UUID
    activity_id: uuid.UUID
    type: str
    occurred_at: datetime


class Nameless(EventPayload):
    lead_id: uuid.UUID


async def test_emit_refuses_a_dict_and_a_payload_of_the_wrong_shape(db: Database) -> None:
    fields = {"lead_id": LEAD, "activity_id": THING, "type": "page_view", "occurred_at": AT}
    wrong: list[Any] = [
        fields,  # a plain dict: its name would be a guess
        LooksLikeAnActivity(**fields),  # the right fields, but no declared event type
        Nameless(lead_id=LEAD),  # an event type that declares no name
        lead_events.LeadActivity.model_construct(lead_id=LEAD),  # made unchecked, with fields missing
    ]
    async with db.sessions() as session:
        for payload in wrong:
            with pytest.raises(TypeError):
                await emit(session, payload)
            with pytest.raises(TypeError):
                await emit_many(session, [payload])
            with pytest.raises(TypeError):
                outbox_row(payload, AT)
        assert not session.new


def test_a_payload_of_the_wrong_shape_cannot_be_made() -> None:
    with pytest.raises(ValueError, match="activity_id"):
        lead_events.LeadActivity(lead_id=LEAD, activity_id="not an id", type="x", occurred_at=AT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="caller"):
        lead_events.CallMissed(lead_id=LEAD, activity_id=THING, campaign=None, started_at=AT,
                               caller="+79123456789")  # type: ignore[call-arg]


def test_the_check_after_each_test_names_undeclared_and_misshapen_events() -> None:
    wrong = undeclared_events([
        ("lead.created", stored(SAMPLES[0])),
        ("lead.guessed", {"lead_id": str(LEAD)}),
        ("lead.activity", {"lead_id": str(LEAD), "type": "page_view"}),
    ])
    assert len(wrong) == 2
    assert wrong[0].startswith("lead.guessed") and wrong[1].startswith("lead.activity")


def test_the_registry_refuses_two_types_declaring_one_name() -> None:
    class Twin(EventPayload):
        """Declares a name another domain's event has."""

        name = "lead.created"

    try:
        domains.install([*DOMAINS, Domain(name="twin", events=(Twin,))])
        with pytest.raises(ValueError, match="lead.created"):
            event_types()
    finally:
        domains.install(DOMAINS)


async def test_the_catalogue_lists_every_declared_event_with_its_schema_to_any_reader(
    client: httpx.AsyncClient, db: Database, admin_headers: dict[str, str]
) -> None:
    reader = {"authorization": f"Bearer {await make_key(db, Scope.leads_read.value)}"}
    resp = await client.get("/v1/events/catalog", headers=reader)
    assert resp.status_code == 200, resp.text
    catalogue = resp.json()
    declared = event_types()
    assert [e["name"] for e in catalogue] == sorted(declared)
    owners = {kind.name: domain.name for domain in DOMAINS for kind in domain.events}
    for entry in catalogue:
        kind = declared[entry["name"]]
        assert entry["domain"] == owners[entry["name"]]
        assert entry["description"] and "\n\n" not in entry["description"]
        assert entry["schema"] == kind.model_json_schema()
    by_name = {e["name"]: e for e in catalogue}
    assert by_name["lead.activity"]["domain"] == "leads"
    assert by_name["lead.qualified"]["domain"] == "scoring"
    assert set(by_name["lead.activity"]["schema"]["required"]) == {"lead_id", "activity_id", "type", "occurred_at"}
    assert (await client.get("/v1/events/catalog", headers=admin_headers)).json() == catalogue


async def test_the_catalogue_needs_a_key_that_may_read(client: httpx.AsyncClient, db: Database) -> None:
    assert (await client.get("/v1/events/catalog")).status_code == 401
    forms = {"authorization": f"Bearer {await make_key(db, Scope.forms.value)}"}
    assert (await client.get("/v1/events/catalog", headers=forms)).status_code == 403
