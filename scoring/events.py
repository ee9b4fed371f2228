"""The events the scoring domain emits, each with its payload type; `EVENTS` is what scoring.domain
declares to the catalogue."""

from __future__ import annotations

import uuid

from pydantic import ConfigDict, Field

from core.events import EventPayload


class StageChanged(EventPayload):
    """The lead's lifecycle stage moved (by its score and grade, by hand, or under a rule set that
    went live). Stages, score and reason are gone from the payload once the person is erased."""

    name = "lead.stage_changed"
    model_config = ConfigDict(validate_by_name=True)

    lead_id: uuid.UUID
    # stored as "from" and "to" (keywords in Python); made here by these names
    from_stage: str | None = Field(default=None, validation_alias="from", serialization_alias="from")
    to_stage: str | None = Field(default=None, validation_alias="to", serialization_alias="to")
    score: float | None = None  # at the change; None when a new rule set moved it
    grade: str | None = None
    reason: str | None = None


class LeadQualified(EventPayload):
    """The lead reached MQL: marketing hands it to sales."""

    name = "lead.qualified"

    lead_id: uuid.UUID
    score: float | None = None  # at qualification; None when a new rule set qualified it
    grade: str | None = None
    reason: str | None = None


class RescoreDue(EventPayload):
    """The next batch of a rule set's roll-out is due: the leads after `after` (by id; None: from
    the first) are scored afresh under `version`."""

    name = "scoring.rescore"

    version: int
    after: uuid.UUID | None


EVENTS: tuple[type[EventPayload], ...] = (StageChanged, LeadQualified, RescoreDue)
