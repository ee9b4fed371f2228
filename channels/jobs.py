"""The channels domain's event handlers and sweeps (run by the worker)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from channels.ledger import settle_stale
from channels.returns import request_optin, returned
from core.events import Event, handles, sweeps
from core.settings import current_settings
from leads.events import EmailBounced, EmailComplained, OptinRequested


@sweeps(name="channels.stale_sends")
async def stale_sends(session: AsyncSession, limit: int) -> int:
    """Sends whose result never came back are marked unknown (never resent on a guess)."""
    return await settle_stale(session, limit)


@handles(EmailBounced.name, EmailComplained.name, name="channels.returned")
async def returned_mail(session: AsyncSession, event: Event) -> None:
    """A bounce or complaint: bounce record, suppression when it is final, activity on the lead."""
    await returned(session, event.read(EmailBounced, EmailComplained).inbound_email_id, current_settings())


@handles(OptinRequested.name, name="channels.optin_mail")
async def optin_mail(session: AsyncSession, event: Event) -> None:
    """The double opt-in confirmation mail, queued once per pending consent."""
    await request_optin(session, event.read(OptinRequested), current_settings())
