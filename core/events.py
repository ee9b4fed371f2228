"""What an event handler and a sweep are: each domain's jobs.py declares its handlers with
`@handles(...)` and its sweeps with `@sweeps(...)`; the worker collects them, runs each handler
once per event (see worker.dispatch) and each sweep every few seconds (see worker.sweeper)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Event:
    id: uuid.UUID
    name: str
    payload: dict[str, Any]
    created_at: datetime


HandlerFunction = Callable[[AsyncSession, Event], Awaitable[None]]


@dataclass(frozen=True)
class Handler:
    """`run` applies its effect in the session it is given and never commits: the worker commits
    it together with the record that the event was handled, so a redelivery is a no-op."""

    name: str  # "<domain>.<verb>", stable: it keys the handled-event records
    events: tuple[str, ...]
    run: HandlerFunction


def handles(*events: str, name: str) -> Callable[[HandlerFunction], Handler]:
    """Declare a handler: `@handles("lead.created", name="campaigns.enroll")`."""
    if not events:
        raise ValueError("a handler handles at least one event")

    def declare(run: HandlerFunction) -> Handler:
        return Handler(name=name, events=tuple(events), run=run)

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
