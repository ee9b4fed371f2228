"""The delivery ledger as people look at it: messages listed by what they were, and one message.
Takes an AsyncSession and never commits: the endpoint owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Message
from core.errors import NotFound
from core.paging import Page, newest_first


async def list_messages(session: AsyncSession, filters: Mapping[str, Any], cursor: str | None, limit: int) -> Page:
    """Ledger rows, newest first; `filters` by column (lead_id, state, channel, campaign, template), None = any."""
    stmt = select(Message)
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(getattr(Message, column) == value)
    return await newest_first(session, stmt, Message, "created_at", cursor, limit)


async def get_message(session: AsyncSession, message_id: uuid.UUID) -> Message:
    found = await session.get(Message, message_id)
    if found is None:
        raise NotFound(f"no message {message_id}", field="message_id")
    return found
