"""What a batch writes besides the leads themselves: each intake's touchpoint, activity, consents
and outbox events, and the visitors it stitched."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.events import EventPayload
from core.outbox import outbox_row
from leads.intake.interaction import Interaction


@dataclass
class BatchRows:
    """What a batch writes besides the leads themselves."""

    touchpoints: list[dict[str, Any]] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)
    consents: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    new_visitors: dict[str, dict[str, Any]] = field(default_factory=dict)  # visitor id → row
    moved_visitors: dict[str, uuid.UUID] = field(default_factory=dict)  # known visitor id → its new lead

    def add(self, interaction: Interaction, at: datetime) -> None:
        """One post's touchpoint, activity, consents and events."""
        self.touchpoints.append(interaction.touchpoint)
        self.activities.append(interaction.activity)
        self.consents += interaction.consents
        for payload in interaction.events:
            self.event(payload, at)

    def event(self, payload: EventPayload, at: datetime) -> None:
        self.events.append(outbox_row(payload, at))
