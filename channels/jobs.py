"""The channels domain's sweeps (run by the worker)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from channels.ledger import settle_stale
from core.events import sweeps


@sweeps(name="channels.stale_sends")
async def stale_sends(session: AsyncSession, limit: int) -> int:
    """Sends whose result never came back are marked unknown (never resent on a guess)."""
    return await settle_stale(session, limit)
