"""The scoring domain's event handlers and sweep (run by the worker)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from core.events import Event, handles_batch, sweeps
from leads.events import LeadActivity, LeadCreated, LeadMerged, LeadUpdated
from scoring.events import RescoreDue
from scoring.rulesets import active_rulesets
from scoring.scores import Work, apply_activities, regrade, rescore
from scoring.service import demote_faded, rescore_batch


async def _under_both(session: AsyncSession, ids: list[uuid.UUID], run: Callable[..., Awaitable[Work]]) -> None:
    """Run `run` under the live rule set and, quietly, under the one being rolled out, if any."""
    if not ids:
        return
    live, building = await active_rulesets(session)
    await run(session, live, ids)
    if building is not None:
        await run(session, building, ids, create=False)


@handles_batch(LeadActivity.name, name="scoring.apply")
async def apply(session: AsyncSession, events: list[Event]) -> None:
    """A lead did something: its score, and maybe its stage, follow within a second."""
    await _under_both(session, [e.read(LeadActivity).activity_id for e in events], apply_activities)


@handles_batch(LeadCreated.name, LeadUpdated.name, name="scoring.grade")
async def grade(session: AsyncSession, events: list[Event]) -> None:
    """The profile changed: fit points and grade follow (and the stage, if the grade moves it)."""
    await _under_both(session, [e.read(LeadCreated, LeadUpdated).lead_id for e in events], regrade)


@handles_batch(LeadMerged.name, name="scoring.merge")
async def merge(session: AsyncSession, events: list[Event]) -> None:
    """Two leads became one: the survivor is scored afresh from the timeline they now share."""
    live, _ = await active_rulesets(session)
    await rescore(session, live, [e.read(LeadMerged).survivor_id for e in events], reason="merged")


@handles_batch(RescoreDue.name, name="scoring.rescore")
async def roll_out(session: AsyncSession, events: list[Event]) -> None:
    """One batch of a rule set's roll-out; it queues the next."""
    for event in events:
        due = event.read(RescoreDue)
        await rescore_batch(session, due.version, due.after)


@sweeps(name="scoring.faded_mqls")
async def faded_mqls(session: AsyncSession, limit: int) -> int:
    """MQLs whose score has decayed below the fall-back line go back to lead."""
    return await demote_faded(session, limit)
