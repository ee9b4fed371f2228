"""Scoring tables: rule set versions, each lead's score per version, the entries that explain it
(and make its history), and the lead's stage changes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from core import clock
from core.db import Base, IdMixin


class RuleSetVersion(IdMixin, Base):
    """A rule set as posted; never changed afterwards. One is live; a newer one is `building`
    while every lead is rescored under it, then it goes live and the old one is retired."""

    __tablename__ = "scoring_rulesets"

    version: Mapped[int] = mapped_column(unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(20))  # building | live | retired
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    live_at: Mapped[datetime | None]
    leads_total: Mapped[int] = mapped_column(default=0)  # the rescore's progress
    leads_done: Mapped[int] = mapped_column(default=0)


class LeadScore(Base):
    """A lead's score under one rule set version: behaviour points valued at `as_of` (decayed on
    read and on write, never by a nightly rewrite), fit points and grade, lifecycle stage."""

    __tablename__ = "lead_scores"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    points: Mapped[float] = mapped_column(Float, default=0.0)
    as_of: Mapped[datetime]
    fit_points: Mapped[float] = mapped_column(Float, default=0.0)
    grade: Mapped[str] = mapped_column(String(1))
    stage: Mapped[str] = mapped_column(String(20))
    stage_at: Mapped[datetime]
    # an MQL's decaying score falls below its fall-back line at this time (the sweep demotes it)
    review_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=clock.now)

    __table_args__ = (Index("ix_lead_scores_review", "version", "review_at"),)


class ScoreEntry(IdMixin, Base):
    """What one activity did to a lead's score under one rule set version: the rule, the points it
    gave (0 when capped or when the engagement was a machine's, with a note saying so), and the
    score right after (the score history)."""

    __tablename__ = "score_entries"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    version: Mapped[int]
    # no foreign key: activities go only with their lead (and the lead's entries with it), and the
    # check would cost as much as the rest of a rescore's COPY of millions of entries
    activity_id: Mapped[uuid.UUID | None]
    activity_type: Mapped[str] = mapped_column(String(50))
    rule: Mapped[str] = mapped_column(String(64))
    points: Mapped[float] = mapped_column(Float)
    score_after: Mapped[float] = mapped_column(Float)
    occurred_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(String(120))

    __table_args__ = (
        Index("ix_score_entries_lead", "lead_id", "version", "occurred_at"),
        Index("ix_score_entries_activity", "activity_id", "version"),
    )


class ScoreCap(Base):
    """What one capped rule has given a lead in one period (a day, week or month starting at
    `period_start`; the epoch for "ever"), so a cap is checked by key, not by summing entries."""

    __tablename__ = "score_caps"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    given: Mapped[float] = mapped_column(Float)


class StageChange(IdMixin, Base):
    __tablename__ = "lead_stage_changes"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    from_stage: Mapped[str] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float)
    grade: Mapped[str] = mapped_column(String(1))
    version: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=clock.now)


class PredictiveModel(IdMixin, Base):
    """A trained predictive model (`nurture train-model`), with how well it did on held-out leads."""

    __tablename__ = "scoring_models"

    version: Mapped[int] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    auc: Mapped[float]
    rules_auc: Mapped[float | None]
    samples: Mapped[int]
    features: Mapped[list[str]] = mapped_column(JSON)
    algorithm: Mapped[str] = mapped_column(String(200))
    blob: Mapped[bytes] = mapped_column(LargeBinary)
