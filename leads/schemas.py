"""Pydantic shapes of the leads domain, with the validation every intake shares."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.emails import normalize_email
from core.errors import Invalid
from core.phones import normalize_phone
from core.text import check_text
from leads.models import CustomerStatus

PROFILE_FIELDS = (
    "email", "phone", "first_name", "last_name", "company", "job_title", "industry",
    "company_size", "country", "region", "city", "timezone", "birthday", "customer_status",
)


def _clean_text(value: Any, field: str, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("must be text", field=field)
    check_text(value, field)
    value = " ".join(value.split())
    if len(value) > max_length:
        raise Invalid(f"must be at most {max_length} characters", field=field)
    return value or None


TEXT_LIMITS = {
    "first_name": 200, "last_name": 200, "company": 300, "job_title": 300, "industry": 200,
    "company_size": 50, "region": 200, "city": 200, "timezone": 64,
}


def clean_profile(raw: dict[str, Any], region: str | None) -> dict[str, Any]:
    """Validate and normalise profile values; raises Invalid naming the first bad field.

    Only keys present in `raw` are returned, so a partial update touches only what was sent.
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in PROFILE_FIELDS:
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            out[key] = None
        elif key == "email":
            if not isinstance(value, str):
                raise Invalid("must be text", field=key)
            out[key] = normalize_email(value)
        elif key == "phone":
            if not isinstance(value, str | int):
                raise Invalid("must be text", field=key)
            out[key] = normalize_phone(str(value), region)
        elif key == "country":
            code = _clean_text(value, key, 2)
            if code is None or len(code) != 2 or not code.isalpha() or not code.isascii():
                raise Invalid("must be a two-letter ISO 3166 country code", field=key)
            out[key] = code.upper()
        elif key == "timezone":
            out[key] = _clean_timezone(value)
        elif key == "birthday":
            out[key] = _clean_date(value, key)
        elif key == "customer_status":
            if value not in CustomerStatus.__members__:
                raise Invalid(f"must be one of {', '.join(CustomerStatus)}", field=key)
            out[key] = value
        else:
            out[key] = _clean_text(value, key, TEXT_LIMITS[key])
    return out


def _clean_timezone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(value, str) or len(value) > 64:
        raise Invalid("must be an IANA time zone such as Europe/Moscow", field="timezone")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid("must be an IANA time zone such as Europe/Moscow", field="timezone") from None
    return value


def _clean_date(value: Any, field: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise Invalid("must be a date as YYYY-MM-DD", field=field) from None


class ConsentIn(BaseModel):
    purpose: str = Field(min_length=1, max_length=100)
    granted: bool = True
    wording: str | None = Field(default=None, max_length=10_000)


def _clean_tags(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    cleaned = []
    for tag in value:
        tag = tag.strip()
        if not tag or len(tag) > 100 or "\x00" in tag:
            raise ValueError("each tag must have 1 to 100 characters")
        cleaned.append(tag)
    return cleaned


class ProfileIn(BaseModel):
    """The profile a client may send; values are validated by `clean_profile`."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    industry: str | None = None
    company_size: str | None = None
    country: str | None = None
    region: str | None = None
    city: str | None = None
    timezone: str | None = None
    birthday: str | None = None
    customer_status: str | None = None
    owner_id: uuid.UUID | None = None
    custom: dict[str, Any] | None = None


class LeadIn(ProfileIn):
    """POST /v1/leads."""

    tags: list[str] | None = None
    consent: list[ConsentIn] | None = None
    utm_source: str | None = Field(default=None, max_length=200)
    utm_medium: str | None = Field(default=None, max_length=200)
    utm_campaign: str | None = Field(default=None, max_length=200)
    utm_content: str | None = Field(default=None, max_length=500)
    utm_term: str | None = Field(default=None, max_length=500)
    visitor_id: str | None = Field(default=None, max_length=64)
    region_hint: str | None = Field(default=None, max_length=2, description="Default phone region")

    _tags = field_validator("tags")(_clean_tags)

    def profile(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in PROFILE_FIELDS if k in self.model_fields_set}


class LeadOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    company: str | None
    job_title: str | None
    industry: str | None
    company_size: str | None
    country: str | None
    region: str | None
    city: str | None
    timezone: str | None
    birthday: date | None
    customer_status: str
    owner_id: uuid.UUID | None
    custom: dict[str, Any]
    tags: list[str]
    source_channel: str
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_names(cls, value: Any) -> Any:
        return [getattr(t, "tag", t) for t in value]


class LeadPatch(ProfileIn):
    """PATCH /v1/leads/{id}: only the keys sent change; null clears a value."""

    tags: list[str] | None = Field(default=None, description="Replace all tags")
    tags_add: list[str] | None = None
    tags_remove: list[str] | None = None
    consent: list[ConsentIn] | None = None
    region_hint: str | None = Field(default=None, max_length=2, description="Default phone region")

    _tags = field_validator("tags", "tags_add", "tags_remove")(_clean_tags)

    def changes(self) -> dict[str, Any]:
        skip = {"consent", "region_hint"}
        return {k: getattr(self, k) for k in self.model_fields_set if k not in skip}


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)


class ConsentRecordIn(ConsentIn):
    """POST /v1/leads/{id}/consents: a grant or (granted=false) a withdrawal."""

    model_config = ConfigDict(extra="forbid")

    ip: str | None = Field(default=None, max_length=64, description="Where the person gave it; default: caller")


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    other_id: uuid.UUID


class ActivityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    type: str
    occurred_at: datetime
    touchpoint_id: uuid.UUID | None
    data: dict[str, Any]


class TouchpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    channel: str
    source: str | None
    medium: str | None
    campaign: str | None
    content: str | None
    term: str | None
    referrer: str | None
    landing_page: str | None
    occurred_at: datetime


class ConsentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    purpose: str
    granted: bool
    source: str
    wording: str | None
    ip: str | None
    occurred_at: datetime


class LeadPage(BaseModel):
    items: list[LeadOut]
    next_cursor: str | None


class ActivityPage(BaseModel):
    items: list[ActivityOut]
    next_cursor: str | None


class TouchpointPage(BaseModel):
    items: list[TouchpointOut]
    next_cursor: str | None
