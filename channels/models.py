"""The delivery ledger: one row per message any channel sends (email, SMS, webhook, messenger,
postal), keyed by the caller's idempotency key so the same message is never queued twice."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, IdMixin, TimestampMixin


class Message(IdMixin, TimestampMixin, Base):
    """A message and where it stands: queued → sending → sent | deferred | failed | unknown,
    or suppressed at send time. `sending` is claimed (committed) before the send starts, so a
    send whose result was never recorded is found in that state and becomes `unknown`: it is
    never sent again on its own."""

    __tablename__ = "messages"

    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))  # marketing | transactional
    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"), index=True)
    recipient: Mapped[str] = mapped_column(String(500))  # address, phone, URL, chat id
    template: Mapped[str | None] = mapped_column(String(100))
    campaign: Mapped[str | None] = mapped_column(String(100))
    step: Mapped[str | None] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what the channel needs beyond the template
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    provider_id: Mapped[str | None] = mapped_column(String(255))  # Message-ID, the provider's message id
    response: Mapped[str | None] = mapped_column(String(1000))  # the last SMTP reply or provider answer
    reason: Mapped[str | None] = mapped_column(String(200))  # why suppressed, failed or unknown

    __table_args__ = (
        Index("ix_messages_due", "state", "next_attempt_at"),
        Index("ix_messages_claimed", "state", "claimed_at"),
    )


messages_t = cast(Table, Message.__table__)
