"""What an event handler and a sweep are: each domain's jobs.py declares its handlers with
`@handles(...)` and its sweeps with `@sweeps(...)`; the worker collects them, runs each handler
once per event (see worker.dispatch) and each sweep every few seconds (see worker.sweeper)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession


class EventPayload(BaseModel):
    """The payload type of one event, declared in its domain's events.py: `name` is the event's
    name ("<noun>.<past participle>"), the docstring says when it happens. Every producer of the
    event emits this type; consumers read its fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]


@dataclass(frozen=True)
class Event:
    id: uuid.UUID
    name: str
    payload: dict[str, Any]
    created_at: datetime


HandlerFunction = Callable[[AsyncSession, Event], Awaitable[None]]
BatchFunction = Callable[[AsyncSession, list[Event]], Awaitable[None]]


@dataclass(frozen=True)
class Handler:
    """`run` applies its effect in the session it is given and never commits: the worker commits
    it together with the record that the event was handled, so a redelivery is a no-op. A batch
    handler (`run_many`) is given every event of a job at once, in commit order, so it can read
    and write for all of them in a few statements; `run` then runs it for one event."""

    name: str  # "<domain>.<verb>", stable: it keys the handled-event records
    events: tuple[str, ...]
    run: HandlerFunction
    run_many: BatchFunction | None = None


def handles(*events: str, name: str) -> Callable[[HandlerFunction], Handler]:
    """Declare a handler: `@handles("lead.created", name="campaigns.enroll")`."""
    if not events:
        raise ValueError("a handler handles at least one event")

    def declare(run: HandlerFunction) -> Handler:
        return Handler(name=name, events=tuple(events), run=run)

    return declare


def handles_batch(*events: str, name: str) -> Callable[[BatchFunction], Handler]:
    """Declare a batch handler: `@handles_batch("lead.activity", name="scoring.apply")` on a
    function taking (session, events)."""
    if not events:
        raise ValueError("a handler handles at least one event")

    def declare(run_many: BatchFunction) -> Handler:
        async def run(session: AsyncSession, event: Event) -> None:
            await run_many(session, [event])

        return Handler(name=name, events=tuple(events), run=run, run_many=run_many)

    return declare


SweepFunction = Callable[[AsyncSession, int], Awaitable[int]]


@dataclass(frozen=True)
class Sweep:
    """Finds due work of one kind that Redis may have forgotten (a campaign step whose time has
    come, a send stuck past its lease) and sets it going again, typically by emitting an event for
    it in the session it is given; returns how much it found (at most the limit it is given). It
    never commits (the sweeper does, then wakes the relay) and picks its rows with
    `core.db.skip_locked`, so several workers sweeping at once never take the same work."""

    name: str
    run: SweepFunction


def sweeps(name: str) -> Callable[[SweepFunction], Sweep]:
    """Declare a sweep: `@sweeps(name="campaigns.due_steps")`."""

    def declare(run: SweepFunction) -> Sweep:
        return Sweep(name=name, run=run)

    return declare
