"""The delivery ledger: one row per message any channel sends (email, SMS, webhook, messenger,
postal), keyed by the caller's idempotency key so the same message is never queued twice."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String, Table, Text, UniqueConstraint
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
    links: Mapped[list[Any] | None]  # the trackable links as rendered: /t/c/{token} redirects to these only
    opened_at: Mapped[datetime | None]  # first open by a person (machine opens do not count)
    clicked_at: Mapped[datetime | None]  # first click by a person
    delivery_status: Mapped[str | None] = mapped_column(String(20))  # the provider's receipt: delivered | undelivered
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_messages_due", "state", "next_attempt_at"),
        Index("ix_messages_claimed", "state", "claimed_at"),
        Index("ix_messages_provider_id", "channel", "provider_id"),
    )


messages_t = cast(Table, Message.__table__)


class Template(IdMixin, TimestampMixin, Base):
    """A message template a marketer saved (validated on save): email (MJML + Jinja) or text (SMS,
    messenger). Messages name it by key and render its current version at send time."""

    __tablename__ = "templates"

    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(20))  # email | sms | messenger | postal
    kind: Mapped[str] = mapped_column(String(20))  # marketing | transactional
    topic: Mapped[str | None] = mapped_column(String(100))  # what a reader can opt out of on its own
    locale: Mapped[str] = mapped_column(String(10), default="ru")
    subject: Mapped[str] = mapped_column(Text, default="")
    preheader: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(default=1)
    archived_at: Mapped[datetime | None]


class Suppression(IdMixin, Base):
    """An address the channel must not send to: for every topic (topic "") or one topic. Erasing the
    lead replaces the address by its keyed hash, so the suppression outlives the person's data."""

    __tablename__ = "suppressions"

    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(500))  # lower-cased address or phone; "hash:<hex>" once erased
    topic: Mapped[str] = mapped_column(String(100), default="")  # "" = everything marketing
    reason: Mapped[str] = mapped_column(String(30))  # unsubscribed | hard_bounce | complaint | soft_bounces | manual
    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"), index=True)
    message_id: Mapped[uuid.UUID | None]  # the message it came from, when one did
    detail: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("channel", "address", "topic"),)


class Bounce(IdMixin, Base):
    """One bounced or complained-about delivery, per recipient, as the classifier read it."""

    __tablename__ = "bounces"

    kind: Mapped[str] = mapped_column(String(20))  # bounce | complaint
    address: Mapped[str] = mapped_column(String(500))
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"), index=True)
    inbound_email_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(String(20), default="")
    reply_code: Mapped[str] = mapped_column(String(3), default="")
    reason: Mapped[str] = mapped_column(String(50), default="")
    hard: Mapped[bool] = mapped_column(Boolean, default=False)
    diagnostic: Mapped[str] = mapped_column(String(1000), default="")
    occurred_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_bounces_address", "address", "occurred_at"),
        UniqueConstraint("inbound_email_id", "address"),
    )


class CapturedMail(IdMixin, Base):
    """A message the capture server kept instead of sending (the default, for the demo and the UI)."""

    __tablename__ = "captured_mail"

    message_id: Mapped[uuid.UUID | None] = mapped_column(index=True)  # the ledger row, when it came from one
    envelope_from: Mapped[str] = mapped_column(String(500))
    recipient: Mapped[str] = mapped_column(String(500), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    received_at: Mapped[datetime] = mapped_column(index=True)


templates_t = cast(Table, Template.__table__)
suppressions_t = cast(Table, Suppression.__table__)
bounces_t = cast(Table, Bounce.__table__)
captured_t = cast(Table, CapturedMail.__table__)
