"""The default outgoing "SMTP server" (NURTURE_SMTP_URL=capture://): messages are kept in the
database instead of sent, for the demo and the UI (GET /v1/outbox/messages). It answers like a
server that accepted the message, so everything else (ledger, tracking links, unsubscribe) behaves
as in production. Messages arriving together are stored in one transaction."""

from __future__ import annotations

import uuid
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from channels.base import Delivery
from channels.ledger import SENT, Outcome
from channels.models import captured_t
from core import clock
from core.db import Database
from core.groupcommit import GroupCommit
from core.ids import new_id

_HEADERS = BytesHeaderParser(policy=compat32)


class CaptureChannel:
    name = "email"

    def __init__(self, db: Database) -> None:
        self._store: GroupCommit[Delivery, uuid.UUID] = GroupCommit(db, "captured_mail", _store_many, _store_one)

    async def deliver(self, delivery: Delivery) -> Outcome:
        captured = await self._store.write(delivery)
        return Outcome(SENT, response=f"250 2.0.0 captured as {captured}", provider_id=str(captured))

    async def close(self) -> None:
        await self._store.close()


def _row(delivery: Delivery) -> dict[str, object]:
    return {
        "id": new_id(), "message_id": delivery.message_id, "envelope_from": delivery.envelope_from,
        "recipient": delivery.recipient, "subject": delivery.subject or subject_of(delivery.raw),
        "raw": delivery.raw, "size": len(delivery.raw), "received_at": clock.now(),
    }


async def _store_many(session: AsyncSession, deliveries: list[Delivery]) -> list[uuid.UUID]:
    rows = [_row(d) for d in deliveries]
    await session.execute(insert(captured_t), rows)
    return [row["id"] for row in rows]  # type: ignore[misc]


async def _store_one(session: AsyncSession, delivery: Delivery) -> uuid.UUID:
    return (await _store_many(session, [delivery]))[0]


def subject_of(raw: bytes) -> str:
    """The Subject of a message, RFC 2047 words decoded."""
    value = _HEADERS.parsebytes(raw).get("Subject") or ""
    try:
        return str(make_header(decode_header(value)))
    except (UnicodeDecodeError, LookupError, ValueError):
        return str(value)
