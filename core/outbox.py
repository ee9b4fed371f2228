"""The outbox: events written in the caller's transaction, relayed to the worker after commit,
and the records that make each handler's effect happen once (handled events, dead letters)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ForeignKey, Index, String, Table, Text, event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column

from core import clock
from core.db import Base, IdMixin, partial_index
from core.events import EventPayload
from core.ids import new_id

NUDGE_CHANNEL = "nurture:outbox"


def nudge_channel(redis: Any) -> str:
    """The nudge channel of the Redis database `redis` uses: channels are shared by all of a
    server's databases, and a relay should only hear the commits meant for its own."""
    return f"{NUDGE_CHANNEL}:{redis.connection_pool.connection_kwargs.get('db', 0)}"


class OutboxEvent(IdMixin, Base):
    __tablename__ = "outbox_events"

    name: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    relayed_at: Mapped[datetime | None]
    # every handler of the event has either applied its effect or gone to the dead letters
    done_at: Mapped[datetime | None]

    # Only pending rows are indexed, in the order they are looked for: the relay's next events
    # (oldest first), the sweeper's events relayed long ago and never done. A row leaves an index as
    # it is relayed or done, so the indexes stay as small as the backlog however long the table
    # grows, and a done row's update adds no entry to either.
    __table_args__ = (
        partial_index("ix_outbox_events_unrelayed", "created_at", "id", where="relayed_at IS NULL"),
        partial_index("ix_outbox_events_undone", "relayed_at", where="done_at IS NULL"),
    )


class HandledEvent(Base):
    """Written in the same transaction as a handler's effect: a redelivered event finds it and
    does nothing (the primary key makes a concurrent second delivery wait, then skip)."""

    __tablename__ = "handled_events"

    # event first: the key serves the cascade from outbox_events too (no second index to keep up)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"), primary_key=True)
    handler: Mapped[str] = mapped_column(String(100), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(default=clock.now)


class FailedEvent(IdMixin, Base):
    """A dead letter: a handler that failed on every try; kept until someone retries it."""

    __tablename__ = "failed_events"

    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"), index=True)
    handler: Mapped[str] = mapped_column(String(100))
    attempts: Mapped[int]
    error: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(default=clock.now)
    retried_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_failed_events_open", "retried_at", "failed_at"),)


# the tables, for Core statements where the ORM's per-statement work would show (relay, dispatch)
outbox_t = cast(Table, OutboxEvent.__table__)
handled_t = cast(Table, HandledEvent.__table__)


async def emit(session: AsyncSession, payload: EventPayload) -> OutboxEvent:
    """Record that the event `payload` stands for happened (its class names it); it becomes visible
    to the worker only if the caller commits."""
    name, stored = _stored(payload)
    event = OutboxEvent(name=name, payload=stored, created_at=clock.now())
    session.add(event)
    session.info["outbox"] = True
    return event


async def emit_many(session: AsyncSession, payloads: Sequence[EventPayload]) -> None:
    """`emit` for many events at once, in one statement (a batch intake)."""
    if not payloads:
        return
    now = clock.now()
    await session.execute(insert(outbox_t), [outbox_row(payload, now) for payload in payloads])
    session.info["outbox"] = True


def outbox_row(payload: EventPayload, at: datetime) -> dict[str, Any]:
    """The outbox row of an event, for a writer that inserts rows itself (set-based intake)."""
    name, stored = _stored(payload)
    return {"id": new_id(), "name": name, "payload": stored, "created_at": at, "relayed_at": None, "done_at": None}


def _stored(payload: EventPayload) -> tuple[str, dict[str, Any]]:
    """The event's name and its payload as stored (JSON: ids and times as strings). Anything but a
    complete payload of a declared event type is refused: its name would be a guess, its shape
    unchecked (a payload is checked as it is made; one made unchecked, by model_construct, must
    at least have every field)."""
    kind = type(payload)
    if not isinstance(payload, EventPayload):
        raise TypeError(f"an event is emitted as its payload type (an EventPayload), not {kind.__name__}")
    name = getattr(kind, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"{kind.__name__} declares no event name")
    fields = kind.__pydantic_fields__
    if len(payload.__dict__) != len(fields):
        raise TypeError(f"the payload of {name!r} lacks {sorted(set(fields) - set(payload.__dict__))}")
    # The serializer itself: model_dump's own checks of its arguments cost as much again, per event.
    return name, kind.__pydantic_serializer__.to_python(payload, mode="json", by_alias=True)


# --- the nudge: the relay hears of a commit at once instead of at its next poll ---------------

_nudge: Callable[[], None] | None = None


def set_nudge(nudge: Callable[[], None] | None) -> None:
    """Install this process's nudge (a Redis publish); None turns it off."""
    global _nudge
    _nudge = nudge


def nudge() -> None:
    """Tell the relay that events were committed; a no-op where no nudge is installed
    (the relay's poll is the safety net)."""
    if _nudge is not None:
        _nudge()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop("outbox", False):
        nudge()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop("outbox", None)


class RedisNudge:
    """Publishes on the nudge channel without making the committer wait; while one publish is in
    flight further commits ride on it, so a burst of commits costs a few publishes."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.channel = nudge_channel(redis)
        self.pending = False
        self.again = False
        self.task: asyncio.Task[None] | None = None

    def __call__(self) -> None:
        if self.pending:
            self.again = True
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.pending = True
        self.task = loop.create_task(self._publish())

    async def _publish(self) -> None:
        try:
            while True:
                self.again = False
                try:
                    await self.redis.publish(self.channel, b"1")
                except Exception:  # Redis down: the relay's poll finds the events
                    return
                if not self.again:
                    return
        finally:
            self.pending = False
