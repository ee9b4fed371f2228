"""What an event, a handler and a sweep are: each domain's events.py declares the payload type of
every event it emits, its jobs.py its handlers (`@handles(...)`) and sweeps (`@sweeps(...)`); the
worker runs each handler once per event (see worker.dispatch) and each sweep every few seconds."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from sqlalchemy.ext.asyncio import AsyncSession

# A time in a payload is stored as Python writes it (2026-03-02T09:30:00+00:00), as the outbox has
# always held it, rather than pydantic's "Z" form.
Time = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")]


class EventPayload(BaseModel):
    """The payload type of one event, declared in its domain's events.py: `name` is the event's
    name ("<noun>.<past participle>"), the docstring says when it happens. Every producer of the
    event emits this type; consumers read its fields.

    Erasing a person rewrites the stored payloads of the events about them (leads.privacy): ids,
    times and a few facts stay, anything else goes, and `erased` is set. So a field that may hold
    something personal (a number, a reason typed by a rep) is optional: None once erased."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]

    # Set only by erasure (never by a producer, hence never written by one).
    erased: bool = Field(default=False, exclude=True, description="the person was erased: personal fields are gone")


P = TypeVar("P", bound=EventPayload)


@dataclass(frozen=True)
class Event:
    id: uuid.UUID
    name: str
    payload: dict[str, Any]
    created_at: datetime

    def read(self, *types: type[P]) -> P:
        """The payload as the type declared for this event, one of `types` (a handler of several
        events names each): `event.read(LeadActivity).activity_id`."""
        for kind in types:
            if kind.name == self.name:
                return kind.model_validate(self.payload)
        raise TypeError(f"the event {self.name!r} is none of {[kind.name for kind in types]}")


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
