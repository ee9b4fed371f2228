"""The write path of scores: applying activities (in batches, a few statements whatever the batch
size), replaying a lead's history, grading, and the stage changes that follow.

Invariants: a score row, when created, replays every activity its lead already has; afterwards
each activity is applied to it once (an activity that already has entries under that version is
skipped, so a replay and a live apply never count it twice). Rows are locked in lead order on
PostgreSQL, so two batches on one lead wait for each other and never deadlock.
Takes an AsyncSession and never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import driver_connection, insert_ignore, lock_keys, one_of, upsert
from core.ids import new_id
from core.outbox import emit
from leads.models import Lead, activities_t, leads_t, touchpoints_t
from leads.search import live_leads
from scoring.events import LeadQualified, StageChanged
from scoring.models import LeadScore, ScoreCap, ScoreEntry, StageChange
from scoring.rules import Facts, Ruleset, cap_kept, capped, decayed, demotion_at, next_stage, period_start

scores_t = cast(Table, LeadScore.__table__)
entries_t = cast(Table, ScoreEntry.__table__)
changes_t = cast(Table, StageChange.__table__)
caps_t = cast(Table, ScoreCap.__table__)
PROFILE = ("email", "industry", "company_size", "job_title", "country", "region", "city")
Given = dict[tuple[uuid.UUID, str, datetime], float]  # (lead, rule, period start) → points given


@dataclass
class Score:
    """A lead's score row being worked on (mirrors LeadScore)."""

    lead_id: uuid.UUID
    version: int
    points: float
    as_of: datetime
    fit_points: float
    grade: str
    stage: str
    stage_at: datetime
    review_at: datetime | None = None
    changed: bool = False

    def value(self, at: datetime, ruleset: Ruleset) -> float:
        return decayed(self.points, self.as_of, at, ruleset.half_life)

    def add(self, points: float, at: datetime, ruleset: Ruleset) -> float:
        """Add points earned at `at`; returns the score right after, at `at`. Exact either way
        round: a late activity (before as_of) adds its points decayed to as_of."""
        if at >= self.as_of:
            self.points = self.value(at, ruleset) + points
            self.as_of = at
        else:
            self.points += decayed(points, at, self.as_of, ruleset.half_life)
        self.changed = True
        return self.value(at, ruleset)

    def row(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id, "version": self.version, "points": self.points, "as_of": self.as_of,
            "fit_points": self.fit_points, "grade": self.grade, "stage": self.stage, "stage_at": self.stage_at,
            "review_at": self.review_at, "updated_at": clock.now(),
        }


@dataclass
class Work:
    """One batch under one rule set version: the score rows, and what it will write."""

    ruleset: Ruleset
    scores: dict[uuid.UUID, Score] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    given: Given = field(default_factory=dict)  # capped rules: points given per (lead, rule, period)
    scored: set[uuid.UUID] = field(default_factory=set)  # activities with entries written by this batch
    fresh: set[uuid.UUID] = field(default_factory=set)  # leads whose rows this batch made (and replayed)
    capped: set[tuple[uuid.UUID, str, datetime]] = field(default_factory=set)  # keys of `given` to write


# --- reading ----------------------------------------------------------------------------------------


async def take_turns(session: AsyncSession, lead_ids: list[uuid.UUID]) -> None:
    """Until commit, this transaction alone works on these leads' scores under the rule set being
    rolled out (its rescore and the live applies to it take turns; PostgreSQL advisory locks)."""
    await lock_keys(session, *(f"score:{lead_id}" for lead_id in lead_ids))


async def open_work(session: AsyncSession, ruleset: Ruleset, lead_ids: list[uuid.UUID], create: bool = True) -> Work:
    """Lock (and with `create`, make) the score rows of these leads under `ruleset`; a row made
    here replays its lead's history. Erased and merged-away leads get none."""
    work = Work(ruleset)
    ids = sorted(set(lead_ids))
    if not ids:
        return work
    await _lock_rows(session, work, ids)
    if create and (missing := [i for i in ids if i not in work.scores]):
        made = await _create_rows(session, ruleset, missing)
        if len(made) < len(missing):  # a concurrent batch made some first: theirs stay, and they replayed
            await _lock_rows(session, work, [i for i in missing if i not in made])
        work.scores.update(made)
        work.fresh.update(made)
        await replay(session, work, sorted(made))
    return work


async def _lock_rows(session: AsyncSession, work: Work, ids: list[uuid.UUID]) -> None:
    """Load these leads' rows into `work`, locked until commit (in lead order: no deadlocks)."""
    if not ids:
        return
    query = select(scores_t).where(one_of(session, scores_t.c.lead_id, ids),
                                   scores_t.c.version == work.ruleset.version)
    if session.get_bind().dialect.name == "postgresql":
        query = query.order_by(scores_t.c.lead_id).with_for_update()
    for row in await session.execute(query):
        work.scores[row.lead_id] = Score(row.lead_id, row.version, row.points, row.as_of, row.fit_points, row.grade,
                                         row.stage, row.stage_at, row.review_at)


async def _create_rows(session: AsyncSession, ruleset: Ruleset, ids: list[uuid.UUID]) -> dict[uuid.UUID, Score]:
    """Insert score rows for these leads (graded, at the stage they have elsewhere); returns the
    rows this call made (locked: they are this transaction's until commit)."""
    now = clock.now()
    stages = await _stages_elsewhere(session, ruleset, ids)
    scores = {}
    for lead_id, profile in (await load_profiles(session, ids)).items():
        fit = ruleset.fit_points(profile)
        stage, since = stages.get(lead_id, ("subscriber", now))
        scores[lead_id] = Score(lead_id, ruleset.version, 0.0, now, fit, ruleset.grade(fit), stage, since)
    if not scores:
        return {}
    statement = insert_ignore(session, scores_t).returning(scores_t.c.lead_id)
    made = await session.execute(statement, [score.row() for score in scores.values()])
    return {row.lead_id: scores[row.lead_id] for row in made}


async def _stages_elsewhere(session: AsyncSession, ruleset: Ruleset,
                            lead_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, datetime]]:
    """The stage each lead has under another version (a new rule set keeps what sales or a
    person set, and where the score had got to, until its own scores move it)."""
    rows = await session.execute(
        select(LeadScore.lead_id, LeadScore.stage, LeadScore.stage_at)
        .where(one_of(session, LeadScore.lead_id, lead_ids), LeadScore.version != ruleset.version)
        .order_by(LeadScore.version)
    )
    return {row.lead_id: (row.stage, row.stage_at) for row in rows}


async def load_profiles(session: AsyncSession, lead_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    columns = [getattr(Lead, name) for name in PROFILE]
    rows = await session.execute(
        select(Lead.id, *columns)
        .where(one_of(session, Lead.id, lead_ids), *live_leads())
    )
    return {row.id: {name: getattr(row, name) for name in PROFILE} for row in rows}


def _activities() -> Any:
    # sorted here, not by the database: an ORDER BY occurred_at tempts the planner into walking
    # the (type, occurred_at) index over every lead's activities instead of these leads' few
    return (
        select(activities_t.c.id, activities_t.c.lead_id, activities_t.c.type, activities_t.c.data,
               activities_t.c.occurred_at, touchpoints_t.c.source, touchpoints_t.c.medium, touchpoints_t.c.campaign,
               leads_t.c.email)
        .join(leads_t, leads_t.c.id == activities_t.c.lead_id)
        .outerjoin(touchpoints_t, touchpoints_t.c.id == activities_t.c.touchpoint_id)
    )


def _in_order(rows: Any) -> list[Any]:
    return sorted(rows, key=attrgetter("occurred_at", "id"))


def _facts(row: Any) -> Facts:
    utm = None
    if row.source or row.medium or row.campaign:
        utm = {k: v for k, v in (("source", row.source), ("medium", row.medium), ("campaign", row.campaign)) if v}
    return Facts.of(row.type, row.occurred_at, row.data or {}, row.email, utm)


# --- scoring ---------------------------------------------------------------------------------------


async def replay(session: AsyncSession, work: Work, lead_ids: list[uuid.UUID]) -> int:
    """Score these leads' whole history into `work` (their rows are fresh or were reset);
    returns the activities read."""
    ruleset = work.ruleset
    rows = _in_order(await session.execute(
        _activities().where(one_of(session, activities_t.c.lead_id, lead_ids),
                            activities_t.c.type.in_(list(ruleset.by_activity)))
    ))
    for row in rows:
        if (score := work.scores.get(row.lead_id)) is not None:
            score_activity(work, score, _facts(row), row.id)
    return len(rows)


async def apply_activities(session: AsyncSession, ruleset: Ruleset, activity_ids: list[uuid.UUID],
                           create: bool = True) -> Work:
    """Score these activities under `ruleset` (those it has not scored yet). `create` is for the
    live rule set; one being rolled out only keeps the rows its rescore made current (quietly)."""
    rows = _in_order(await session.execute(
        _activities().where(one_of(session, activities_t.c.id, activity_ids),
                            activities_t.c.type.in_(list(ruleset.by_activity)))
    ))
    if not rows:
        return Work(ruleset)
    lead_ids = list({row.lead_id for row in rows})
    if not create:  # the rule set being rolled out: its rescore and this apply take turns per lead
        await take_turns(session, lead_ids)
    work = await open_work(session, ruleset, lead_ids, create)
    done = work.scored | set(await session.scalars(
        select(ScoreEntry.activity_id).where(one_of(session, ScoreEntry.activity_id, [row.id for row in rows]),
                                             ScoreEntry.version == ruleset.version)
    ))
    rows = [row for row in rows if row.id not in done and row.lead_id in work.scores]
    if rows:
        work.given.update(await _given_in_periods(session, ruleset, rows))
        for row in rows:
            score_activity(work, work.scores[row.lead_id], _facts(row), row.id)
    await settle(session, work, emit_events=create)
    return work


def score_activity(work: Work, score: Score, facts: Facts, activity_id: uuid.UUID | None) -> None:
    """The points the rules give for one activity (capped; none for a machine's engagement)."""
    ruleset = work.ruleset
    for rule in ruleset.matches(facts):
        note = None
        if facts.machine:
            points, note = 0.0, f"machine: {facts.machine}"[:120]
        else:
            points = rule.points
            if rule.cap:
                key = (score.lead_id, rule.key, period_start(rule.cap.per, facts.occurred_at))
                points = capped(rule.points, rule.cap, work.given.get(key, 0.0))
                work.given[key] = work.given.get(key, 0.0) + abs(points)
                work.capped.add(key)
                if points == 0:
                    note = f"capped: {rule.cap.points:g} per {rule.cap.per}"
        after = score.add(points, facts.occurred_at, ruleset) if points else score.value(facts.occurred_at, ruleset)
        work.entries.append({
            "id": new_id(), "lead_id": score.lead_id, "version": ruleset.version, "activity_id": activity_id,
            "activity_type": facts.type, "rule": rule.key, "points": points, "score_after": after,
            "occurred_at": facts.occurred_at, "note": note,
        })
        if activity_id is not None:
            work.scored.add(activity_id)


async def _given_in_periods(session: AsyncSession, ruleset: Ruleset, rows: list[Any]) -> Given:
    """What the capped rules already gave these leads in the periods these activities fall in."""
    caps = {rule.key: rule.cap for rules in ruleset.by_activity.values() for rule in rules if rule.cap}
    if not caps:
        return {}
    starts = {period_start(cap.per, row.occurred_at) for row in rows for cap in caps.values()}
    found = await session.execute(
        select(ScoreCap.lead_id, ScoreCap.rule, ScoreCap.period_start, ScoreCap.given).where(
            one_of(session, ScoreCap.lead_id, list({row.lead_id for row in rows})), ScoreCap.version == ruleset.version,
            ScoreCap.rule.in_(list(caps)), ScoreCap.period_start.in_(list(starts)),
        )
    )
    return {(row.lead_id, row.rule, row.period_start): row.given for row in found}


async def forget(session: AsyncSession, version: int, lead_ids: list[uuid.UUID]) -> None:
    """Drop these leads' entries and cap counters under `version` (before scoring them afresh)."""
    for table in (entries_t, caps_t):
        await session.execute(delete(table).where(table.c.lead_id.in_(lead_ids), table.c.version == version))


async def rescore(session: AsyncSession, ruleset: Ruleset, lead_ids: list[uuid.UUID], reason: str) -> Work:
    """Score these leads afresh from their whole history (after a merge), keeping their stage
    unless the new score moves it."""
    work = await open_work(session, ruleset, lead_ids)
    if again := [lead_id for lead_id in work.scores if lead_id not in work.fresh]:
        await forget(session, ruleset.version, again)
        for lead_id in again:
            score = work.scores[lead_id]
            score.points, score.as_of, score.changed = 0.0, score.stage_at, True
        await replay(session, work, again)
    await settle(session, work, reason=reason)
    return work


async def regrade(session: AsyncSession, ruleset: Ruleset, lead_ids: list[uuid.UUID], create: bool = True) -> Work:
    """Recompute fit points and grade from the profiles (a lead was created or changed)."""
    if not create:
        await take_turns(session, lead_ids)
    work = await open_work(session, ruleset, lead_ids, create)
    profiles = await load_profiles(session, list(work.scores))
    for lead_id, score in work.scores.items():
        if lead_id in profiles and (fit := ruleset.fit_points(profiles[lead_id])) != score.fit_points:
            score.fit_points, score.grade, score.changed = fit, ruleset.grade(fit), True
    await settle(session, work, reason="profile", emit_events=create)
    return work


# --- writing ---------------------------------------------------------------------------------------


async def settle(session: AsyncSession, work: Work, reason: str = "score", emit_events: bool = True) -> None:
    """Move stages, then write entries, stage changes, events and the score rows touched."""
    now = clock.now()
    ruleset = work.ruleset
    for score in work.scores.values():
        for _ in range(3):  # subscriber → lead → MQL may happen at once
            target = next_stage(score.stage, score.value(now, ruleset), score.grade, ruleset.stages)
            if target is None:
                break
            await change_stage(session, work, score, target, reason, now, emit_events)
    await _write_rows(session, entries_t, work.entries)
    work.entries = []
    if work.changes:
        await session.execute(insert(changes_t), work.changes)
        work.changes = []
    if kept := sorted(key for key in work.capped if cap_kept(key[2], now)):
        counters = [{"lead_id": lead_id, "version": ruleset.version, "rule": rule, "period_start": start,
                     "given": work.given[(lead_id, rule, start)]} for lead_id, rule, start in kept]
        # a row this batch made has no counters yet (they go with their row): plain inserts
        await _write_rows(session, caps_t, [c for c in counters if c["lead_id"] in work.fresh])
        if older := [c for c in counters if c["lead_id"] not in work.fresh]:
            statement = upsert(session, caps_t, ["lead_id", "version", "rule", "period_start"], "given")
            await session.execute(statement, older)
    work.capped = set()
    touched = [score for score in work.scores.values() if score.changed]
    for score in touched:
        score.review_at = (
            demotion_at(score.points, score.as_of, ruleset.stages, ruleset.half_life) if score.stage == "mql" else None
        )
    if touched:
        columns = ("points", "as_of", "fit_points", "grade", "stage", "stage_at", "review_at", "updated_at")
        await session.execute(
            update(scores_t)
            .where(scores_t.c.lead_id == bindparam("b_lead"), scores_t.c.version == bindparam("b_version"))
            .values({name: bindparam(name) for name in columns}),
            [{name: value for name, value in score.row().items() if name in columns}
             | {"b_lead": score.lead_id, "b_version": score.version} for score in touched],
        )
        for score in touched:
            score.changed = False


async def _write_rows(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert new rows; many (a rescore's) go by COPY on PostgreSQL, in the session's transaction."""
    if not rows:
        return
    if len(rows) < 500 or session.get_bind().dialect.name != "postgresql":
        await session.execute(insert(table), rows)
        return
    columns = list(rows[0])
    await (await driver_connection(session)).copy_records_to_table(
        table.name, columns=columns, records=[tuple(row[c] for c in columns) for row in rows],
    )


async def change_stage(session: AsyncSession, work: Work, score: Score, target: str, reason: str,
                       now: datetime, emit_events: bool = True) -> None:
    """Record a stage change; the live rule set's changes are announced (`lead.stage_changed`,
    and `lead.qualified` on reaching MQL) — a rule set being rolled out stays quiet."""
    value = round(score.value(now, work.ruleset), 2)
    work.changes.append({
        "id": new_id(), "lead_id": score.lead_id, "from_stage": score.stage, "to_stage": target,
        "reason": reason[:200], "score": value, "grade": score.grade, "at": now, "version": work.ruleset.version,
    })
    if emit_events:
        await emit(session, StageChanged(
            lead_id=score.lead_id, from_stage=score.stage, to_stage=target, score=value, grade=score.grade,
            reason=reason,
        ))
        if target == "mql":
            await emit(session, LeadQualified(lead_id=score.lead_id, score=value, grade=score.grade, reason=reason))
    score.stage, score.stage_at, score.changed = target, now, True
