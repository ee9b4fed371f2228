"""The outbox: events written in the caller's transaction, relayed to the worker after commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core import clock
from core.db import Base, IdMixin


class OutboxEvent(IdMixin, Base):
    __tablename__ = "outbox_events"

    name: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    relayed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_events_unrelayed", "relayed_at", "created_at"),)


async def emit(session: AsyncSession, name: str, payload: dict[str, Any]) -> OutboxEvent:
    """Record that `name` happened; it becomes visible to the worker only if the caller commits."""
    event = OutboxEvent(name=name, payload=_jsonable(payload), created_at=clock.now())
    session.add(event)
    return event


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
