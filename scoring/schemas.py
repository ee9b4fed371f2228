"""Pydantic shapes of the scoring API (the rule language itself is scoring.rules)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scoring.rules import STAGES


class RuleSetOut(BaseModel):
    version: int
    name: str
    state: str
    created_at: datetime | None
    live_at: datetime | None
    leads_total: int
    leads_done: int
    spec: dict[str, Any]


class StageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str = Field(description=f"One of {', '.join(STAGES)}")
    reason: str = Field(default="set by hand", max_length=200)


class StageOut(BaseModel):
    lead_id: uuid.UUID
    stage: str
    grade: str
