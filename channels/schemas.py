"""Pydantic shapes of the channels API: saved templates, previews and test sends, the captured outbox,
the delivery ledger and the suppression list."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TemplateChannel = Literal["email", "sms", "messenger", "postal"]
TemplateKind = Literal["marketing", "transactional"]
Locale = Literal["ru", "en"]
LedgerChannel = Literal["email", "sms", "webhook", "messenger", "postal"]
LedgerState = Literal["queued", "sending", "sent", "deferred", "failed", "unknown", "suppressed"]
Reason = Literal["unsubscribed", "hard_bounce", "complaint", "soft_bounces", "manual", "blocked"]

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
TOPIC_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
# Keys a saved template may not take: the built-in templates' namespace, and the words of the routes beside
# /v1/templates/{key} (a template called "starters" could never be read).
RESERVED_KEYS = ("starters", "from-starter")
SYSTEM_PREFIX = "system:"

MAX_SUBJECT = 1000
MAX_BODY = 200_000


def _saved_key(value: str) -> str:
    if value.lower().startswith(SYSTEM_PREFIX):
        raise ValueError("keys starting with 'system:' belong to the built-in templates")
    if value.lower() in RESERVED_KEYS:
        raise ValueError(f"'{value}' is reserved by the API")
    return value


def _blank_topic(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


# --- templates -----------------------------------------------------------------------------------


class TemplateContent(BaseModel):
    """The editable fields of a template; subject and preheader are Jinja text, body MJML + Jinja for email and
    Jinja text for the other channels."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: TemplateKind = "marketing"
    topic: str | None = Field(default=None, max_length=100, pattern=TOPIC_PATTERN,
                              description="What a reader can opt out of on its own")
    locale: Locale = "ru"
    subject: str = Field(default="", max_length=MAX_SUBJECT)
    preheader: str = Field(default="", max_length=MAX_SUBJECT)
    body: str = Field(max_length=MAX_BODY)

    _topic = field_validator("topic", mode="before")(_blank_topic)


class TemplateIn(TemplateContent):
    """POST /v1/templates."""

    key: str = Field(max_length=100, pattern=KEY_PATTERN, description="Letters, digits, - _ . : (not 'system:…')")
    channel: TemplateChannel = "email"

    _key = field_validator("key")(_saved_key)


class TemplateReplace(TemplateContent):
    """PUT /v1/templates/{key}: every editable field (what is left out takes its default); the channel stays."""

    channel: TemplateChannel | None = Field(default=None, description="Must be the template's own, if sent")


class FromStarterIn(BaseModel):
    """POST /v1/templates/from-starter."""

    model_config = ConfigDict(extra="forbid")

    starter: str = Field(max_length=50, description="A name from GET /v1/templates/starters")
    locale: Locale = "ru"
    key: str = Field(max_length=100, pattern=KEY_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    topic: str | None = Field(default=None, max_length=100, pattern=TOPIC_PATTERN)

    _key = field_validator("key")(_saved_key)
    _topic = field_validator("topic", mode="before")(_blank_topic)


class SmsSegmentsOut(BaseModel):
    encoding: Literal["GSM-7", "UCS-2"]
    characters: int = Field(description="Septets (GSM-7) or UTF-16 code units (UCS-2)")
    segments: int
    per_segment: int = Field(description="160/70 for a single segment, 153/67 each when split")


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    name: str
    channel: str
    kind: str
    topic: str | None
    locale: str
    subject: str
    preheader: str
    body: str
    version: int
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    segments: SmsSegmentsOut | None = Field(default=None, description="SMS only: the body rendered for a sample lead")


class StarterOut(BaseModel):
    name: str
    locale: str
    channel: str = "email"
    kind: str = "marketing"
    subject: str
    preheader: str
    body: str


class TemplatePreviewIn(BaseModel):
    """POST /v1/templates/{key}/preview: a lead's real context, or a sample lead's; `context` is merged over it."""

    model_config = ConfigDict(extra="forbid")

    lead_id: uuid.UUID | None = None
    locale: Locale | None = Field(default=None, description="The sample lead's language; default the template's")
    context: dict[str, Any] | None = None


class LinkOut(BaseModel):
    url: str
    tag: str | None


class TemplatePreviewOut(BaseModel):
    """Email: subject, preheader, html, text, links (as written, not rewritten). SMS: text, segments. Messenger
    and postal: text."""

    subject: str | None = None
    preheader: str | None = None
    html: str | None = None
    text: str
    links: list[LinkOut] | None = None
    segments: SmsSegmentsOut | None = None


class TestSendIn(BaseModel):
    """POST /v1/templates/{key}/test: to an email address (a phone for SMS, a chat id for messenger)."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1, max_length=320)
    lead_id: uuid.UUID | None = Field(default=None, description="Render with this lead's data")


class TestSendOut(BaseModel):
    message_id: uuid.UUID


# --- the captured outbox -------------------------------------------------------------------------


class CapturedOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    message_id: uuid.UUID | None = Field(description="The ledger row it came from, if any")
    recipient: str
    envelope_from: str
    subject: str
    size: int
    received_at: datetime


class CapturedDetail(CapturedOut):
    text: str | None
    html: str | None
    headers: list[tuple[str, str]]


class CapturedPage(BaseModel):
    items: list[CapturedOut]
    next_cursor: str | None


# --- the ledger ----------------------------------------------------------------------------------


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    idempotency_key: str
    channel: str
    kind: str
    lead_id: uuid.UUID | None
    recipient: str
    template: str | None
    campaign: str | None
    step: str | None
    state: str
    attempts: int
    next_attempt_at: datetime | None
    sent_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    provider_id: str | None
    response: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


# --- suppressions --------------------------------------------------------------------------------


class SuppressionIn(BaseModel):
    """POST /v1/suppressions: emails are validated and lower-cased, SMS numbers must be E.164 (+…)."""

    model_config = ConfigDict(extra="forbid")

    channel: LedgerChannel
    address: str = Field(min_length=1, max_length=500)
    topic: str = Field(default="", max_length=100, pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9_.:-]{0,99})?$",
                       description="Empty: every marketing message")
    reason: Reason = "manual"
    detail: str | None = Field(default=None, max_length=500)


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    channel: str
    address: str
    topic: str
    reason: str
    lead_id: uuid.UUID | None
    message_id: uuid.UUID | None
    detail: str | None
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None
