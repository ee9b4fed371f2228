"""Scoring services for the API, the CLI and the jobs: posting a rule set and rolling it out
(rescore in batches, then live in one transaction), stages set by hand, the fading-MQL sweep and
the explanation of a lead's score. Takes an AsyncSession and never commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database, skip_locked
from core.errors import Conflict, Invalid, NotFound
from core.outbox import emit
from leads.models import Lead
from leads.search import live_leads
from scoring.events import LeadQualified, RescoreDue, StageChanged
from scoring.models import LeadScore, RuleSetVersion, ScoreEntry, StageChange
from scoring.rules import CAP_KEPT, EVER, STAGES, RuleSetIn
from scoring.rulesets import BUILDING, LIVE, RETIRED, active_rulesets, compile_ruleset, live_ruleset
from scoring.scores import Score, Work, caps_t, change_stage, entries_t, open_work, scores_t, settle, take_turns

RESCORE_BATCH = 500
HISTORY_POINTS = 200


async def post_ruleset(session: AsyncSession, spec: RuleSetIn, chain: bool = True) -> RuleSetVersion:
    """Store `spec` as the next version and start rolling it out (by the workers, one batch
    after another; `chain=False`: the caller drives rescore_batch itself); a version still
    rolling out is superseded (its rescore stops, its rows go)."""
    last = await session.scalar(select(func.max(RuleSetVersion.version))) or 0
    for superseded in await session.scalars(select(RuleSetVersion).where(RuleSetVersion.state == BUILDING)):
        superseded.state = RETIRED
        await _drop_version(session, superseded.version)
    total = await session.scalar(select(func.count()).select_from(Lead).where(*live_leads()))
    row = RuleSetVersion(version=last + 1, name=spec.name, spec=spec.model_dump(mode="json", by_alias=True),
                         state=BUILDING, leads_total=total or 0, leads_done=0)
    session.add(row)
    await session.flush()
    if chain:
        await emit(session, RescoreDue(version=row.version, after=None))
    return row


async def _drop_version(session: AsyncSession, version: int) -> None:
    for table in (entries_t, caps_t, scores_t):
        await session.execute(delete(table).where(table.c.version == version))


async def rescore_batch(session: AsyncSession, version: int, after: uuid.UUID | None,
                        chain: bool = True) -> uuid.UUID | None:
    """Score the next leads (by id, after `after`) afresh under `version` from their history, and
    queue the next batch; after the last one the version goes live. Returns the last lead done,
    or None when the version is live (or no longer being rolled out)."""
    row = await building_row(session, version)
    if row is None:
        return None
    query = select(Lead.id).where(*live_leads())
    if after is not None:
        query = query.where(Lead.id > after)
    lead_ids = list(await session.scalars(query.order_by(Lead.id).limit(RESCORE_BATCH)))
    if not lead_ids:
        await go_live(session, row)
        return None
    await rescore_range(session, row, lead_ids)
    if chain:
        await emit(session, RescoreDue(version=version, after=lead_ids[-1]))
    return lead_ids[-1]


async def building_row(session: AsyncSession, version: int) -> RuleSetVersion | None:
    return await session.scalar(
        select(RuleSetVersion).where(RuleSetVersion.version == version, RuleSetVersion.state == BUILDING)
    )


async def rescore_range(session: AsyncSession, row: RuleSetVersion, lead_ids: list[uuid.UUID]) -> None:
    """Score these leads (ascending ids, a contiguous range of the live leads) afresh under the
    version being rolled out. Ranges that do not overlap may run at once."""
    version = row.version
    await take_turns(session, lead_ids)
    # what an earlier delivery of this batch wrote goes first: everything in the batch's range of
    # ids, including leads merged away since
    for table in (entries_t, caps_t, scores_t):
        await session.execute(delete(table).where(
            table.c.lead_id >= lead_ids[0], table.c.lead_id <= lead_ids[-1], table.c.version == version,
        ))
    ruleset = compile_ruleset(row.id, row.version, row.spec)
    work = await open_work(session, ruleset, lead_ids)  # fresh rows replay
    await settle(session, work, reason="new rules", emit_events=False)
    await session.execute(
        update(RuleSetVersion).where(RuleSetVersion.id == row.id)
        .values(leads_done=RuleSetVersion.leads_done + len(lead_ids))
    )


async def rescore_here(db: Database, version: int, concurrency: int = 3,
                       progress: Callable[[int], None] | None = None) -> None:
    """Roll out `version` from this process (`nurture rescore`): batches of leads in parallel
    transactions, each committed, then live. Leads that arrive meanwhile are scored from their
    history the first time they are touched."""
    async with db.sessions() as session:
        ids = list(await session.scalars(
            select(Lead.id).where(*live_leads()).order_by(Lead.id)
        ))
    batches = [ids[i:i + RESCORE_BATCH] for i in range(0, len(ids), RESCORE_BATCH)]
    gate = asyncio.Semaphore(concurrency)

    async def one(lead_ids: list[uuid.UUID]) -> None:
        async with gate, db.sessions() as session:
            if (row := await building_row(session, version)) is None:
                raise Conflict(f"rule set version {version} is no longer being rolled out", field="version")
            await rescore_range(session, row, lead_ids)
            await session.commit()
        if progress is not None:
            progress(len(lead_ids))

    await asyncio.gather(*(one(batch) for batch in batches))
    async with db.sessions() as session:
        if (row := await building_row(session, version)) is not None:
            await go_live(session, row)
            await session.commit()


async def go_live(session: AsyncSession, row: RuleSetVersion) -> None:
    """The rolled-out version replaces the live one in one transaction; leads whose stage differs
    under it are announced as stage changes (and new MQLs as qualified)."""
    old = await live_ruleset(session)
    old_stages = {score.lead_id: score.stage for score in await session.execute(
        select(LeadScore.lead_id, LeadScore.stage).where(LeadScore.version == old.version)
    )}
    now = clock.now()
    for stored in await session.scalars(select(RuleSetVersion).where(RuleSetVersion.state == LIVE)):
        stored.state = RETIRED
    row.state, row.live_at, row.leads_done = LIVE, now, max(row.leads_done, row.leads_total)
    await _drop_version(session, old.version)
    for lead_id, stage in (await session.execute(
        select(LeadScore.lead_id, LeadScore.stage).where(LeadScore.version == row.version)
    )).all():
        if lead_id in old_stages and old_stages[lead_id] != stage:
            await emit(session, StageChanged(
                lead_id=lead_id, from_stage=old_stages[lead_id], to_stage=stage, reason="new rules",
            ))
            if stage == "mql":
                await emit(session, LeadQualified(lead_id=lead_id, reason="new rules"))


async def set_stage(session: AsyncSession, lead_id: uuid.UUID, stage: str, reason: str) -> Score:
    """A stage set by hand or by sales (SQL, opportunity, customer, disqualified, recycled)."""
    if stage not in STAGES:
        raise Invalid(f"unknown stage {stage!r}: one of {', '.join(STAGES)}", field="stage")
    live, building = await active_rulesets(session)
    result = None
    for ruleset in (live, building):
        if ruleset is None:
            continue
        work = await open_work(session, ruleset, [lead_id], create=ruleset is live)
        if (score := work.scores.get(lead_id)) is None:
            continue
        if score.stage != stage:
            await change_stage(session, work, score, stage, reason, clock.now(), emit_events=ruleset is live)
        await settle(session, work, reason=reason, emit_events=ruleset is live)
        result = result or score
    if result is None:
        raise Conflict("this lead was erased or merged into another", field="lead_id")
    return result


async def demote_faded(session: AsyncSession, limit: int) -> int:
    """MQLs whose decaying score has fallen below the fall-back line go back to lead (a sweep)."""
    ruleset = await live_ruleset(session)
    query = (
        select(LeadScore.lead_id)
        .where(LeadScore.version == ruleset.version, LeadScore.review_at <= clock.now(), LeadScore.stage == "mql")
        .order_by(LeadScore.review_at).limit(limit)
    )
    due = list(await session.scalars(skip_locked(query, session)))
    if due:
        work = await open_work(session, ruleset, due)
        await settle(session, work, reason="score faded")
    # cap counters of periods long over are of no use any more
    await session.execute(delete(caps_t).where(caps_t.c.period_start <= clock.now() - CAP_KEPT,
                                               caps_t.c.period_start > EVER))
    return len(due)


async def explain(session: AsyncSession, lead_id: uuid.UUID) -> dict[str, Any]:
    """The lead's score now, its grade and stage, what contributed (decayed to now), and history."""
    lead = await session.get(Lead, lead_id)
    if lead is None:
        raise NotFound(f"no lead {lead_id}", field="lead_id")
    if lead.merged_into_id is not None:
        raise Conflict(f"lead {lead_id} was merged into {lead.merged_into_id}", field="lead_id")
    ruleset = await live_ruleset(session)
    work: Work = await open_work(session, ruleset, [lead_id])
    await settle(session, work)  # a lead never scored before is scored from its history now
    score = work.scores.get(lead_id)
    if score is None:
        raise Conflict("this lead was erased", field="lead_id")
    now = clock.now()
    labels = {rule.key: rule.label for rules in ruleset.by_activity.values() for rule in rules}
    entries = list(await session.scalars(
        select(ScoreEntry).where(ScoreEntry.lead_id == lead_id, ScoreEntry.version == ruleset.version)
        .order_by(ScoreEntry.occurred_at.desc(), ScoreEntry.id.desc()).limit(HISTORY_POINTS)
    ))
    changes = list(await session.scalars(
        select(StageChange).where(StageChange.lead_id == lead_id)
        .order_by(StageChange.at.desc(), StageChange.id.desc()).limit(50)
    ))
    from scoring.predict import predict

    prediction = (await predict(session, [lead_id], ruleset)).get(lead_id)
    return {
        "lead_id": lead_id,
        "score": round(score.value(now, ruleset), 2),
        "prediction": prediction,
        "as_of": now,
        "grade": score.grade,
        "fit_points": score.fit_points,
        "stage": score.stage,
        "stage_since": score.stage_at,
        "customer_status": lead.customer_status,
        "ruleset_version": ruleset.version,
        "half_life_days": float(ruleset.spec.half_life_days),
        "contributions": [
            {
                "rule": e.rule, "label": labels.get(e.rule, e.rule), "activity_id": e.activity_id,
                "activity_type": e.activity_type, "occurred_at": e.occurred_at, "points": e.points,
                "points_now": round(e.points * 0.5 ** ((now - e.occurred_at) / ruleset.half_life), 2),
                "note": e.note,
            }
            for e in entries
        ],
        "history": [{"at": e.occurred_at, "score": round(e.score_after, 2)} for e in reversed(entries)],
        "stage_changes": [
            {"from": c.from_stage, "to": c.to_stage, "at": c.at, "reason": c.reason, "score": c.score}
            for c in changes
        ],
    }
