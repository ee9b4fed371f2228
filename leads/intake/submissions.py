"""A website form post: check the values against the form and record the lead in one go."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from core.emails import normalize_email
from core.errors import Invalid
from core.outbox import emit
from core.phones import normalize_phone
from core.text import check_text, scrub
from leads.fields import coerce
from leads.fields import definitions as custom_field_definitions
from leads.intake.forms import UTM_KEYS
from leads.intake.interaction import Origin, optin_request
from leads.models import Channel, Consent, Form
from leads.schemas import ConsentIn, clean_profile
from leads.service import IntakeResult, record_intake

TRUE_WORDS = {"1", "true", "on", "yes", "y", "да", "checked"}
FALSE_WORDS = {"", "0", "false", "off", "no", "n", "нет"}
DEFAULT_MAX = {"textarea": 10_000}
ACTIVITY = "form_submitted"  # the activity of a form post, alone or in a group (form_batch)
VISITOR_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")
UTM_LIMITS = {"utm_source": 200, "utm_medium": 200, "utm_campaign": 200, "utm_content": 500, "utm_term": 500}


@dataclass
class Visit:
    """What we know about the page the form was posted from."""

    page_url: str | None = None
    referrer: str | None = None
    visitor_id: str | None = None
    ip: str | None = None
    utm: dict[str, str] = field(default_factory=dict)


@dataclass
class CleanValues:
    profile: dict[str, Any]
    custom: dict[str, Any]
    extra: dict[str, Any]
    consent_given: bool


def visit_from(values: dict[str, Any], referer: str | None, cookie_vid: str | None, ip: str | None) -> Visit:
    """Context fields the page sends along (`_page`, `_referrer`, `_vid`, utm_*), or headers."""
    page = _short_text(values.get("_page"), 2000) or _short_text(referer, 2000)
    visitor = next(
        (v for v in (values.get("_vid"), cookie_vid) if isinstance(v, str) and VISITOR_ID.match(v)), None
    )
    utm = {k: v for k in UTM_KEYS if (v := _short_text(values.get(k), UTM_LIMITS[k]))}
    if page and not utm:
        # A plain HTML form has no utm fields, but the page it sits on was opened with them.
        try:
            query = dict(parse_qsl(urlsplit(page).query))
        except ValueError:
            query = {}
        utm = {k: v for k in UTM_KEYS if (v := _short_text(query.get(k), UTM_LIMITS[k]))}
    return Visit(
        page_url=page, referrer=_short_text(values.get("_referrer"), 2000), visitor_id=visitor, ip=ip, utm=utm
    )


def is_honeypot_hit(form: Form, values: dict[str, Any]) -> bool:
    value = values.get(form.honeypot_field)
    return value not in (None, "", False, [])


def clean_values(
    form: Form, values: dict[str, Any], custom_defs: dict[str, Any], region: str | None
) -> CleanValues:
    """Check each posted value against its field; raises Invalid naming the form's field."""
    profile: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for spec in form.fields or []:
        name = spec["name"]
        value = _clean_one(spec, values.get(name), region)
        target = spec.get("lead_field")
        if target and target.startswith("custom."):
            key = target.removeprefix("custom.")
            if key in custom_defs and value is not None:
                try:
                    custom[key] = coerce(custom_defs[key], value)
                except Invalid as exc:
                    raise Invalid(exc.message, field=name) from None
            elif value is not None:
                extra[name] = value  # the custom field was removed since: keep the answer anyway
        elif target:
            if value is not None and target in ("email", "phone") and spec.get("type") == target:
                profile[target] = value  # its field's type normalised it as the lead field would
            elif value is not None:
                try:
                    profile.update(clean_profile({target: value}, region))
                except Invalid as exc:
                    raise Invalid(exc.message, field=name) from None
        elif value is not None:
            extra[name] = value
    if not profile.get("email") and not profile.get("phone"):
        contact = next(
            (s["name"] for s in form.fields or [] if s.get("lead_field") in ("email", "phone")), "email"
        )
        raise Invalid("an email address or a phone number is required", field=contact)
    consent_given = _truthy(values.get("consent"))
    if form.consent_purpose and form.consent_required and not consent_given:
        raise Invalid("consent is required to submit this form", field="consent")
    return CleanValues(profile=profile, custom=custom, extra=extra, consent_given=consent_given)


def _clean_one(spec: dict[str, Any], raw: Any, region: str | None) -> Any:
    name, kind = spec["name"], spec.get("type", "text")
    if kind == "checkbox":
        checked = _truthy(raw)
        if spec.get("required") and not checked:
            raise Invalid("must be checked", field=name)
        return checked
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = str(raw)  # JSON clients send numbers for numbers and phones
    if raw is not None and not isinstance(raw, str):
        raise Invalid("must be text", field=name)
    # The visitor typed it, so refuse what no database stores (NUL, half a character) by its name.
    check_text(raw, name)
    text = (raw or "").strip()
    if not text:
        if spec.get("required"):
            raise Invalid("is required", field=name)
        return None
    limit = spec.get("max_length") or DEFAULT_MAX.get(kind, 1000)
    if len(text) > limit:
        raise Invalid(f"must be at most {limit} characters", field=name)
    if kind == "email":
        return normalize_email(text, field=name)
    if kind == "phone":
        return normalize_phone(text, region, field=name)
    if kind == "select":
        allowed = [c["value"] for c in spec.get("choices") or []]
        if text not in allowed:
            raise Invalid(f"must be one of {', '.join(allowed)}", field=name)
        return text
    if kind == "number":
        try:
            number = float(text.replace(",", ".").replace(" ", "").replace("\u00a0", ""))
        except ValueError:
            raise Invalid("must be a number", field=name) from None
        if not math.isfinite(number):
            raise Invalid("must be a number", field=name)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "date":
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise Invalid("must be a date as YYYY-MM-DD", field=name) from None
    if kind in ("text", "hidden"):
        return " ".join(text.split())
    return text


@dataclass
class FormPost:
    """A form post whose values passed the form's checks: ready to record, alone or in a group."""

    form: Form
    cleaned: CleanValues
    visit: Visit

    @cached_property  # the post is not changed once checked; a group reads these more than once
    def origin(self) -> Origin:
        utm = self.visit.utm
        return Origin(
            channel=Channel.form,
            source=utm.get("utm_source"), medium=utm.get("utm_medium"),
            campaign=utm.get("utm_campaign") or self.form.default_campaign,
            content=utm.get("utm_content"), term=utm.get("utm_term"),
            referrer=self.visit.referrer, landing_page=self.visit.page_url,
            visitor_id=self.visit.visitor_id, ip=self.visit.ip,
        )

    @cached_property
    def activity_data(self) -> dict[str, Any]:
        utm = self.visit.utm
        return {"form": self.form.key, "values": self.cleaned.extra, **({"utm": utm} if utm else {})}

    @property
    def grants_consent(self) -> bool:
        """Consent given on a single opt-in form: recorded as granted at once."""
        return bool(self.form.consent_purpose and self.cleaned.consent_given and not self.form.double_opt_in)

    @cached_property
    def consents(self) -> list[ConsentIn]:
        """The consents the post grants (none on a double opt-in form until confirmed)."""
        if not self.grants_consent:
            return []
        return [ConsentIn(purpose=self.form.consent_purpose or "", granted=True, wording=self.form.consent_wording)]

    @property
    def requests_optin(self) -> bool:
        """Consent given on a double opt-in form: a confirmation mail must ask again."""
        return bool(self.form.consent_purpose and self.cleaned.consent_given and self.form.double_opt_in)


async def check_post(
    db: Database, form: Form, values: dict[str, Any], visit: Visit, default_region: str
) -> FormPost:
    """The post checked against its form; raises Invalid naming the form's field. Writes nothing."""
    region = form.default_region or default_region
    custom_defs: dict[str, Any] = {}
    if any(str(f.get("lead_field") or "").startswith("custom.") for f in form.fields or []):
        async with db.sessions() as session:
            custom_defs = await custom_field_definitions(session)
    post = FormPost(form=form, cleaned=clean_values(form, values, custom_defs, region), visit=visit)
    check_text(post.activity_data, "data")
    return post


async def submit_form(session: AsyncSession, post: FormPost) -> IntakeResult:
    """Record one post: lead, touchpoint, activity, consent, tags and outbox events. Never commits.
    (`form_batch` records many posts in one transaction the same way.)

    With double opt-in the consent is stored as *not granted yet* (granted=False, with the
    wording and IP as evidence of the request) and `lead.optin_requested` asks the email
    channel for the confirmation mail; the confirmation click records granted=True. Until
    then the send-time consent check sees "not granted", which is what double opt-in means.
    """
    result = await record_intake(
        session, post.cleaned.profile, post.origin, ACTIVITY, activity_data=post.activity_data,
        custom=post.cleaned.custom, tags=list(post.form.tags or []), consents=post.consents,
    )
    if post.requests_optin:
        await _request_optin(session, post, result)
    return result


async def _request_optin(session: AsyncSession, post: FormPost, result: IntakeResult) -> None:
    lead, form = result.lead, post.form
    purpose = form.consent_purpose or ""
    latest = await session.scalar(
        select(Consent.granted)
        .where(Consent.lead_id == lead.id, Consent.purpose == purpose)
        .order_by(Consent.occurred_at.desc(), Consent.id.desc())
        .limit(1)
    )
    if latest:
        # Already confirmed earlier: asking again would be spam, and a pending row would revoke it.
        return
    pending, asked = optin_request(
        lead.id, bool(lead.email), purpose, form.consent_wording, form.key, post.origin, result.activity.occurred_at,
    )
    session.add(Consent(**pending))
    await session.flush()
    if asked is not None:
        await emit(session, asked)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        return word not in FALSE_WORDS
    return False


def _short_text(value: Any, limit: int) -> str | None:
    """Context the page sends along (page, referrer, utm): kept as found, repaired rather than
    refused — the visitor did not type it and cannot fix it, and the lead matters more."""
    if not isinstance(value, str):
        return None
    return scrub(value.strip())[:limit].strip() or None
