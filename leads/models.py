"""Tables of the leads domain."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

import core.auth  # noqa: F401  (Lead.owner_id refers to the users table)
from core import clock
from core.db import Base, IdMixin, TimestampMixin, partial_index


class CustomerStatus(StrEnum):
    new = "new"
    current = "current"
    former = "former"


class Channel(StrEnum):
    form = "form"
    call = "call"
    email = "email"
    api = "api"
    import_ = "import"
    event = "event"


def present_index(name: str, column: str) -> Index:
    """An index of the rows where `column` is set, for a column most rows leave empty (a page view's
    visitor id, an erased person's hashes): every form post would otherwise add a NULL entry to it.
    Lookups by value (`=`, `IN`) use it on both databases."""
    return partial_index(name, column, where=f"{column} IS NOT NULL")


class Lead(IdMixin, TimestampMixin, Base):
    __tablename__ = "leads"

    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(300))
    job_title: Mapped[str | None] = mapped_column(String(300))
    industry: Mapped[str | None] = mapped_column(String(200))
    company_size: Mapped[str | None] = mapped_column(String(50))
    country: Mapped[str | None] = mapped_column(String(2))
    region: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str | None] = mapped_column(String(64))
    birthday: Mapped[date | None]
    customer_status: Mapped[str] = mapped_column(String(20), default=CustomerStatus.new.value)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    custom: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_channel: Mapped[str] = mapped_column(String(20))
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id"))
    erased_at: Mapped[datetime | None]
    # Keyed one-way hashes of an erased person's email and phone (see leads.privacy): enough to
    # recognise them on a later import, useless for recovering the address.
    erased_email_hash: Mapped[str | None] = mapped_column(String(64))
    erased_phone_hash: Mapped[str | None] = mapped_column(String(64))

    tags: Mapped[list[LeadTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="LeadTag.tag"
    )

    __table_args__ = (
        Index("ix_leads_created", "created_at", "id"),
        present_index("ix_leads_erased_email_hash", "erased_email_hash"),
        present_index("ix_leads_erased_phone_hash", "erased_phone_hash"),
    )


class LeadAlias(Base):
    """An email or phone a lead had before it was merged into another: it still finds the lead
    that lives on (`lead_id`), so the person writing from an old address is not a new lead."""

    __tablename__ = "lead_aliases"

    merged_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)  # email | phone
    value: Mapped[str] = mapped_column(String(320))
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)

    __table_args__ = (Index("ix_lead_aliases_value", "kind", "value"),)


class LeadTag(Base):
    __tablename__ = "lead_tags"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class Visitor(Base):
    """A first-party visitor id (cookie) that became known as a lead."""

    __tablename__ = "visitors"

    visitor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    first_seen_at: Mapped[datetime] = mapped_column(default=clock.now)

    lead: Mapped[Lead] = relationship(lazy="raise")


class Touchpoint(IdMixin, Base):
    """One inbound interaction and where it came from."""

    __tablename__ = "touchpoints"

    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    visitor_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(String(200))
    medium: Mapped[str | None] = mapped_column(String(200))
    campaign: Mapped[str | None] = mapped_column(String(200), index=True)
    content: Mapped[str | None] = mapped_column(String(500))
    term: Mapped[str | None] = mapped_column(String(500))
    referrer: Mapped[str | None] = mapped_column(Text)
    landing_page: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(default=clock.now)

    # Declared so one flush writes the lead before its touchpoints (never loaded implicitly).
    lead: Mapped[Lead | None] = relationship(lazy="raise")

    __table_args__ = (
        Index("ix_touchpoints_lead", "lead_id", "occurred_at"),
        present_index("ix_touchpoints_visitor_id", "visitor_id"),
    )


class Activity(IdMixin, Base):
    """The lead's timeline: form submitted, call answered, email received, page view, note…"""

    __tablename__ = "activities"

    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    visitor_id: Mapped[str | None] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(50))
    touchpoint_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("touchpoints.id", ondelete="SET NULL"))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime] = mapped_column(default=clock.now)

    # Declared so one flush writes the lead and touchpoint first (never loaded implicitly).
    lead: Mapped[Lead | None] = relationship(lazy="raise")
    touchpoint: Mapped[Touchpoint | None] = relationship(lazy="raise")

    __table_args__ = (
        Index("ix_activities_lead", "lead_id", "occurred_at"),
        Index("ix_activities_type", "type", "occurred_at"),
        present_index("ix_activities_visitor_id", "visitor_id"),
    )


class Consent(IdMixin, Base):
    __tablename__ = "consents"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(100))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(200))
    wording: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(default=clock.now)

    lead: Mapped[Lead] = relationship(lazy="raise")


class CustomFieldType(StrEnum):
    text = "text"
    number = "number"
    integer = "integer"
    boolean = "boolean"
    date = "date"
    choice = "choice"
    email = "email"
    url = "url"


class CustomField(IdMixin, Base):
    """A typed custom field; values live in Lead.custom so no schema change is needed."""

    __tablename__ = "custom_fields"

    key: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    choices: Mapped[list[Any] | None]
    min_value: Mapped[float | None]
    max_value: Mapped[float | None]
    max_length: Mapped[int | None] = mapped_column(Integer)
    pattern: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class Form(IdMixin, TimestampMixin, Base):
    __tablename__ = "forms"

    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # [{"name", "label", "type", "required", "max_length", "choices", "lead_field"}]
    fields: Mapped[list[Any]] = mapped_column(default=list)
    consent_purpose: Mapped[str | None] = mapped_column(String(100))
    consent_wording: Mapped[str | None] = mapped_column(Text)
    consent_required: Mapped[bool] = mapped_column(Boolean, default=False)
    success_url: Mapped[str | None] = mapped_column(Text)
    error_url: Mapped[str | None] = mapped_column(Text)
    allowed_origins: Mapped[list[Any]] = mapped_column(default=list)
    default_campaign: Mapped[str | None] = mapped_column(String(200))
    default_region: Mapped[str | None] = mapped_column(String(2))
    double_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    honeypot_field: Mapped[str] = mapped_column(String(64), default="website_url")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    archived_at: Mapped[datetime | None]


class TrackingNumber(IdMixin, Base):
    """A phone number published in one campaign, so a call to it is credited there."""

    __tablename__ = "tracking_numbers"

    number: Mapped[str] = mapped_column(String(32), unique=True)
    campaign: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str | None] = mapped_column(String(200))
    medium: Mapped[str | None] = mapped_column(String(200))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class InboundEmail(IdMixin, Base):
    """Every message that reached us by SMTP or POST, with what we took it for."""

    __tablename__ = "inbound_emails"

    kind: Mapped[str] = mapped_column(String(20))  # inquiry | bounce | complaint | auto_reply
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    mail_from: Mapped[str | None] = mapped_column(String(320))
    rcpt_to: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    size: Mapped[int] = mapped_column(Integer, default=0)
    # Bounces, complaints and auto-replies are kept whole for the email channel's classifier (and a person
    # who wants to see what came back); an inquiry's words are in its activity, so it is not kept twice.
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    received_at: Mapped[datetime] = mapped_column(default=clock.now)

    __table_args__ = (UniqueConstraint("message_id", name="uq_inbound_emails_message_id"),)


class Segment(IdMixin, TimestampMixin, Base):
    __tablename__ = "segments"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    filter: Mapped[dict[str, Any]]
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    refreshed_at: Mapped[datetime | None]


class SegmentMember(Base):
    __tablename__ = "segment_members"

    segment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True, index=True)
    entered_at: Mapped[datetime] = mapped_column(default=clock.now)


class ImportRun(IdMixin, Base):
    __tablename__ = "import_runs"

    filename: Mapped[str] = mapped_column(String(500))
    mapping: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="running")
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[Any]] = mapped_column(default=list)
    # How the file was read (encoding, delimiter, columns and their fields, unknown columns),
    # the options it ran with, and why it stopped when it could not finish.
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=clock.now)
    finished_at: Mapped[datetime | None]


# The tables, for set-based reads and writes in Core (batches, scoring)
leads_t = cast(Table, Lead.__table__)
tags_t = cast(Table, LeadTag.__table__)
aliases_t = cast(Table, LeadAlias.__table__)
touchpoints_t = cast(Table, Touchpoint.__table__)
activities_t = cast(Table, Activity.__table__)
consents_t = cast(Table, Consent.__table__)
visitors_t = cast(Table, Visitor.__table__)
