"""What an event handler is: each domain's jobs.py declares its handlers with `@handles(...)`;
the worker collects them and runs each once per event (see worker.dispatch)."""

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
