"""Scoring's parts of a person's data (declared in scoring.domain): their scores, the entries that
explain them and their stage history; and what scoring adds to a message's template context."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import one_of
from core.domains import LeadIds, row_values
from core.settings import Settings
from scoring.models import LeadScore, RuleSetVersion, ScoreCap, ScoreEntry, StageChange

# Stage moves that nurture made itself say so in words of its own; any other reason was typed by a
# person (POST /v1/leads/{id}/stage) and may say anything about the lead.
SYSTEM_REASONS = frozenset({"score", "profile", "new rules", "score faded", "merged", "set by hand"})


async def export_scores(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    """Their score under each rule set version, and the caps that limited it."""
    scores = await session.scalars(
        select(LeadScore).where(LeadScore.lead_id.in_(ids)).order_by(LeadScore.version, LeadScore.lead_id)
    )
    caps = list(await session.scalars(
        select(ScoreCap).where(ScoreCap.lead_id.in_(ids))
        .order_by(ScoreCap.version, ScoreCap.rule, ScoreCap.period_start)
    ))
    return [
        row_values(s) | {"caps": [row_values(c) for c in caps if (c.lead_id, c.version) == (s.lead_id, s.version)]}
        for s in scores
    ]


async def export_score_entries(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    found = await session.scalars(
        select(ScoreEntry).where(ScoreEntry.lead_id.in_(ids))
        .order_by(ScoreEntry.version, ScoreEntry.occurred_at, ScoreEntry.id)
    )
    return [row_values(e) for e in found]


async def export_stage_history(session: AsyncSession, ids: LeadIds) -> list[dict[str, Any]]:
    found = await session.scalars(
        select(StageChange).where(StageChange.lead_id.in_(ids)).order_by(StageChange.at, StageChange.id)
    )
    return [row_values(c) for c in found]


async def erase_stage_reasons(session: AsyncSession, ids: LeadIds, _settings: Settings) -> None:
    """The moves stay (the funnel counts them); a reason a person typed goes."""
    await session.execute(
        update(StageChange).where(StageChange.lead_id.in_(ids), StageChange.reason.not_in(SYSTEM_REASONS))
        .values(reason="erased")
    )


TEMPLATE_DEFAULTS = {"score": 0, "grade": "", "stage": ""}


async def template_context(session: AsyncSession, ids: LeadIds) -> dict[uuid.UUID, dict[str, Any]]:
    """Each lead's score (rounded), grade and stage under the live rule set."""
    live = await session.scalar(select(RuleSetVersion.version).where(RuleSetVersion.state == "live")) or 0
    s = LeadScore
    found = await session.execute(
        select(s.lead_id, s.points, s.grade, s.stage).where(one_of(session, s.lead_id, list(ids)), s.version == live)
    )
    return {r.lead_id: {"score": round(r.points), "grade": r.grade, "stage": r.stage} for r in found}
