"""Web form definitions: what a marketer may configure, checked field by field, and the
create / list / read / update / archive services behind /v1/forms.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database, flush_unique
from core.errors import Conflict, Invalid, NotFound
from core.logging import get_logger
from core.text import check_text
from leads.fields import definitions as custom_field_definitions
from leads.intake import invalid_from
from leads.models import Form
from leads.schemas import PROFILE_FIELDS

log = get_logger("nurture.forms")

FieldType = Literal["text", "email", "phone", "textarea", "select", "checkbox", "hidden", "number", "date"]
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
# Names the submit endpoint reads itself; a form field may not take them.
RESERVED_NAMES = frozenset({"consent", *UTM_KEYS})
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Profile fields a form may fill (lifecycle and ownership are not the visitor's to set).
FORM_PROFILE_FIELDS = tuple(f for f in PROFILE_FIELDS if f != "customer_status")


class Choice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=200)
    label: str = Field(min_length=1, max_length=500)


class FormField(BaseModel):
    """One input of a form; `lead_field` says where its value lands on the lead."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    label: str = Field(min_length=1, max_length=500)
    type: FieldType = "text"
    required: bool = False
    max_length: int | None = Field(default=None, ge=1, le=10_000)
    choices: list[Choice] | None = Field(default=None, max_length=200)
    lead_field: str | None = None
    placeholder: str | None = Field(default=None, max_length=200)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            raise ValueError(f"'{value}' is read by the form itself; choose another name")
        return value

    @field_validator("choices", mode="before")
    @classmethod
    def _plain_choices(cls, value: Any) -> Any:
        # ["Москва", "Казань"] is shorthand for value = label.
        if isinstance(value, list):
            return [{"value": c, "label": c} if isinstance(c, str) else c for c in value]
        return value

    @field_validator("lead_field")
    @classmethod
    def _known_lead_field(cls, value: str | None) -> str | None:
        if value is None or value in FORM_PROFILE_FIELDS:
            return value
        if value.startswith("custom.") and SLUG.match(value.removeprefix("custom.")):
            return value
        raise ValueError(f"must be one of {', '.join(FORM_PROFILE_FIELDS)} or custom.<key>")

    @model_validator(mode="after")
    def _consistent(self) -> FormField:
        if self.lead_field is None and self.name in FORM_PROFILE_FIELDS:
            self.lead_field = self.name
        if self.type == "select" and not self.choices:
            raise ValueError("a select field needs choices")
        if self.type != "select" and self.choices:
            raise ValueError("only a select field has choices")
        if self.lead_field == "email" and self.type != "email":
            raise ValueError("the field filling the lead's email must have type 'email'")
        if self.lead_field == "phone" and self.type != "phone":
            raise ValueError("the field filling the lead's phone must have type 'phone'")
        return self


class ConsentSpec(BaseModel):
    """The consent checkbox (posted as `consent`) and the exact words the visitor agreed to."""

    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")
    wording: str = Field(min_length=1, max_length=10_000)
    required: bool = True


class FormIn(BaseModel):
    """A complete form definition (POST /v1/forms)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=SLUG.pattern, description="Slug used in /v1/forms/{key}/submit")
    name: str | None = Field(default=None, max_length=200)
    fields: list[FormField] = Field(min_length=1, max_length=50)
    success_url: str | None = None
    error_url: str | None = None
    allowed_origins: list[str] = Field(default_factory=list, max_length=50)
    consent: ConsentSpec | None = None
    double_opt_in: bool = False
    default_region: str | None = None
    default_campaign: str | None = Field(default=None, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=20)
    honeypot_field: str = Field(default="website_url", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

    @field_validator("success_url", "error_url")
    @classmethod
    def _redirect_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if len(value) > 2000:
            raise ValueError("must be at most 2000 characters")
        if value.startswith("/") and not value.startswith("//") and "\\" not in value:
            return value  # a page served by nurture itself, e.g. /demo/thanks
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL or a path starting with /")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for raw in value:
            origin = normalize_origin(raw)
            if origin is None or urlsplit(raw.strip()).path not in ("", "/"):
                raise ValueError(f"{raw!r} is not an origin such as https://example.ru")
            if origin not in out:
                out.append(origin)
        return out

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("must be a two-letter region such as RU or KZ")
        return value.upper()

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        cleaned = [t.strip() for t in value]
        if any(not t or len(t) > 100 for t in cleaned):
            raise ValueError("each tag must have 1 to 100 characters")
        return list(dict.fromkeys(cleaned))


class FormOut(FormIn):
    id: uuid.UUID
    name: str | None
    submit_url: str
    embed_url: str
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


def normalize_origin(value: str) -> str | None:
    """`https://Example.ru:443/` → `https://example.ru`; None when it is no http(s) origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


async def check_definition(session: AsyncSession, form: FormIn) -> None:
    """Rules across fields, each raising Invalid naming the field to fix."""
    check_text(form.model_dump())
    names: set[str] = set()
    mapped: dict[str, str] = {}
    custom = await custom_field_definitions(session)
    for i, spec in enumerate(form.fields):
        if spec.name in names:
            raise Invalid(f"two fields are named '{spec.name}'", field=f"fields.{i}.name")
        names.add(spec.name)
        if spec.lead_field:
            if spec.lead_field in mapped:
                raise Invalid(
                    f"'{spec.lead_field}' is already filled by field '{mapped[spec.lead_field]}'",
                    field=f"fields.{i}.lead_field",
                )
            mapped[spec.lead_field] = spec.name
            key = spec.lead_field.removeprefix("custom.")
            if spec.lead_field.startswith("custom.") and key not in custom:
                raise Invalid(f"no custom field '{key}' is defined", field=f"fields.{i}.lead_field")
    if form.honeypot_field in names:
        raise Invalid("the honeypot must not be one of the form's fields", field="honeypot_field")
    if "email" not in mapped and "phone" not in mapped:
        raise Invalid("a form needs a field filling the lead's email or phone", field="fields")
    if form.double_opt_in and (form.consent is None or "email" not in mapped):
        raise Invalid("double opt-in needs a consent and an email field", field="double_opt_in")


def apply_definition(form: Form, body: FormIn) -> None:
    form.name = body.name or body.key
    form.fields = [f.model_dump(exclude_none=True) for f in body.fields]
    form.success_url = body.success_url
    form.error_url = body.error_url
    form.allowed_origins = list(body.allowed_origins)
    form.consent_purpose = body.consent.purpose if body.consent else None
    form.consent_wording = body.consent.wording if body.consent else None
    form.consent_required = body.consent.required if body.consent else False
    form.double_opt_in = body.double_opt_in
    form.default_region = body.default_region
    form.default_campaign = body.default_campaign
    form.tags = list(body.tags)
    form.honeypot_field = body.honeypot_field


def definition_of(form: Form) -> dict[str, Any]:
    """The stored form as the dict a client would post to recreate it."""
    consent = None
    if form.consent_purpose:
        consent = {
            "purpose": form.consent_purpose, "wording": form.consent_wording or "",
            "required": form.consent_required,
        }
    return {
        "key": form.key, "name": form.name, "fields": list(form.fields or []),
        "success_url": form.success_url, "error_url": form.error_url,
        "allowed_origins": list(form.allowed_origins or []), "consent": consent,
        "double_opt_in": form.double_opt_in, "default_region": form.default_region,
        "default_campaign": form.default_campaign, "tags": list(form.tags or []),
        "honeypot_field": form.honeypot_field,
    }


def form_out(form: Form) -> FormOut:
    return FormOut(
        **definition_of(form), id=form.id, submit_url=f"/v1/forms/{form.key}/submit",
        embed_url=f"/v1/forms/{form.key}/embed.js", created_at=form.created_at,
        updated_at=form.updated_at, archived_at=form.archived_at,
    )


async def create_form(session: AsyncSession, body: FormIn) -> Form:
    await check_definition(session, body)
    if await session.scalar(select(Form.id).where(Form.key == body.key)):
        raise Conflict(f"a form with key '{body.key}' exists", field="key")
    now = clock.now()
    form = Form(key=body.key, created_at=now, updated_at=now)
    apply_definition(form, body)
    session.add(form)
    await flush_unique(session, Conflict(f"a form with key '{body.key}' exists", field="key"))
    return form


async def list_forms(session: AsyncSession, include_archived: bool = False) -> list[Form]:
    query = select(Form).order_by(Form.key)
    if not include_archived:
        query = query.where(Form.archived_at.is_(None))
    return list(await session.scalars(query))


async def get_form(session: AsyncSession, key: str, live_only: bool = False) -> Form:
    """The form called `key`; with `live_only`, an archived form is as good as missing."""
    form = await session.scalar(select(Form).where(Form.key == key)) if SLUG.match(key) else None
    if form is None or (live_only and form.archived_at is not None):
        raise NotFound(f"no form '{key}'", field="form_key")
    return form


class LiveForms:
    """Live form definitions for the public submit path, kept for a few seconds so a busy form
    costs no query per post. Edits made through this app show at once; edits made in another
    process within `seconds` (and one query's time). One per application (app.state), so tests
    never share it.

    One query per form at a time: the posts that arrive while a definition loads wait for that
    one query, and once a definition is older than `seconds` the posts keep using it while a
    single query fetches it again in the background, instead of each post querying the database
    itself, all at the moment a busy form's copy expires."""

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds
        self._forms: dict[str, tuple[float, Form]] = {}
        self._loading: dict[str, asyncio.Task[Form]] = {}
        self._edits = 0  # bumped by `forget`: a load that started before an edit is not kept

    async def get(self, db: Database, key: str) -> Form:
        cached = self._forms.get(key)
        if cached is None:
            return await asyncio.shield(self._load(db, key))
        if time.monotonic() - cached[0] >= self.seconds:
            self._load(db, key)
        return cached[1]

    def forget(self, key: str) -> None:
        self._forms.pop(key, None)
        self._edits += 1

    async def close(self) -> None:
        """Wait for the loads under way (on shutdown, before the pool closes)."""
        await asyncio.gather(*self._loading.values(), return_exceptions=True)

    def _load(self, db: Database, key: str) -> asyncio.Task[Form]:
        """The load of `key` under way, or a new one."""
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._fetch(db, key, self._edits))
            self._loading[key] = loading
            loading.add_done_callback(lambda task: self._loaded(key, task))
        return loading

    async def _fetch(self, db: Database, key: str, edits: int) -> Form:
        started = time.monotonic()
        try:
            async with db.sessions() as session:
                form = await get_form(session, key, live_only=True)
                session.expunge(form)  # a detached copy, shared by the requests of the next seconds
        except NotFound:
            self._forms.pop(key, None)  # archived or gone: its posts get 404 from now on
            raise
        if edits == self._edits:
            if len(self._forms) > 10_000:
                self._forms.clear()
            self._forms[key] = (started, form)
        return form

    def _loaded(self, key: str, task: asyncio.Task[Form]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and (error := task.exception()) is not None and not isinstance(error, NotFound):
            # A refresh nobody waits for: the old copy stays in use and the next post tries again.
            log.warning("form definition not loaded", form=key, error=repr(error))


def live_forms(state: Any) -> LiveForms:
    if not hasattr(state, "live_forms"):
        state.live_forms = LiveForms()
    return state.live_forms  # type: ignore[no-any-return]


async def update_form(session: AsyncSession, key: str, changes: dict[str, Any]) -> Form:
    """Apply the sent keys of a definition; the merged result is validated as a whole."""
    form = await get_form(session, key)
    if "key" in changes and changes["key"] != key:
        raise Invalid("a form's key cannot change", field="key")
    merged = {**definition_of(form), **changes}
    try:
        body = FormIn.model_validate(merged)
    except ValidationError as exc:
        raise invalid_from(exc) from None
    await check_definition(session, body)
    apply_definition(form, body)
    form.updated_at = clock.now()
    await session.flush()
    return form


async def archive_form(session: AsyncSession, key: str) -> Form:
    """Archived forms refuse posts (404) but keep their history."""
    form = await get_form(session, key)
    if form.archived_at is None:
        form.archived_at = clock.now()
        form.updated_at = form.archived_at
    await session.flush()
    return form
