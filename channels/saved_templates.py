"""Saved templates: validated on save, versioned on change, archived (never deleted), and what an SMS
template costs in segments.
Takes an AsyncSession and never commits: the endpoint owns the transaction."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Template as SavedTemplate
from channels.schemas import (
    KEY_PATTERN,
    FromStarterIn,
    SmsSegmentsOut,
    StarterOut,
    TemplateContent,
    TemplateIn,
    TemplateReplace,
)
from channels.starters import STARTERS, starter
from channels.templates import (
    EmailTemplate,
    SmsInfo,
    TemplateInvalid,
    compile_text,
    sample_context,
    sms_segments,
    validate,
    validate_text,
)
from core import clock
from core.db import flush_unique
from core.errors import Conflict, Invalid, NotFound, NurtureError
from core.text import check_text

_KEY = re.compile(KEY_PATTERN)


def check_content(channel: str, body: TemplateContent) -> None:
    """Everything that stops the template from being saved: text no database can store, then the template
    library's checks (Jinja syntax and variables with their lines, MJML, the unsubscribe link)."""
    for field in ("name", "subject", "preheader", "body"):
        check_text(getattr(body, field), field)
    if not body.name.strip():
        raise Invalid("must not be empty", field="name")
    if channel == "email":
        problems = validate(EmailTemplate(subject=body.subject, body=body.body, preheader=body.preheader,
                                          kind=body.kind))
    else:
        problems = validate_text(body.body, "body")
    if problems:
        raise TemplateInvalid(problems)


def _apply(template: SavedTemplate, body: TemplateContent) -> bool:
    """Copy the editable fields; True when any of them changed."""
    values = {
        "name": " ".join(body.name.split()), "kind": body.kind, "topic": body.topic, "locale": body.locale,
        "subject": body.subject, "preheader": body.preheader, "body": body.body,
    }
    changed = False
    for name, value in values.items():
        if getattr(template, name, None) != value:
            setattr(template, name, value)
            changed = True
    return changed


async def _taken(session: AsyncSession, key: str) -> Conflict | None:
    found = (await session.execute(select(SavedTemplate.archived_at).where(SavedTemplate.key == key))).first()
    if found is None:
        return None
    note = " (archived: its key stays taken)" if found.archived_at is not None else ""
    return Conflict(f"a template with key '{key}' exists{note}", field="key")


async def create_template(session: AsyncSession, body: TemplateIn) -> SavedTemplate:
    check_content(body.channel, body)
    if (conflict := await _taken(session, body.key)) is not None:
        raise conflict
    now = clock.now()
    template = SavedTemplate(key=body.key, channel=body.channel, version=1, created_at=now, updated_at=now)
    _apply(template, body)
    session.add(template)
    await flush_unique(session, Conflict(f"a template with key '{body.key}' exists", field="key"))
    return template


async def create_from_starter(session: AsyncSession, body: FromStarterIn) -> SavedTemplate:
    if body.starter not in STARTERS:
        raise Invalid(f"no starter '{body.starter}'; there are {', '.join(sorted(STARTERS))}", field="starter")
    ready = starter(body.starter, body.locale)
    return await create_template(session, TemplateIn(
        key=body.key, name=body.name, channel="email", kind=ready.kind, topic=body.topic, locale=body.locale,
        subject=ready.subject, preheader=ready.preheader, body=ready.body,
    ))


def starters() -> list[StarterOut]:
    return [
        StarterOut(name=name, locale=locale, subject=t.subject, preheader=t.preheader, body=t.body)
        for name, by_locale in STARTERS.items() for locale, t in by_locale.items()
    ]


async def get_template(session: AsyncSession, key: str, for_update: bool = False) -> SavedTemplate:
    found = None
    if _KEY.match(key):
        query = select(SavedTemplate).where(SavedTemplate.key == key)
        found = await session.scalar(query.with_for_update() if for_update else query)
    if found is None:
        raise NotFound(f"no template '{key}'", field="template_key")
    return found


async def list_templates(session: AsyncSession, archived: bool = False) -> list[SavedTemplate]:
    query = select(SavedTemplate).order_by(SavedTemplate.key)
    if not archived:
        query = query.where(SavedTemplate.archived_at.is_(None))
    return list(await session.scalars(query))


def check_live(template: SavedTemplate) -> None:
    if template.archived_at is not None:
        raise Conflict(f"the template '{template.key}' is archived", field="template_key")


async def replace_template(session: AsyncSession, key: str, body: TemplateReplace) -> SavedTemplate:
    """Replace the editable fields; a change makes a new version (messages render the current one)."""
    template = await get_template(session, key, for_update=True)
    if body.channel is not None and body.channel != template.channel:
        raise Invalid(f"a template's channel cannot change (this one is {template.channel}); save a new template",
                      field="channel")
    check_live(template)
    check_content(template.channel, body)
    if _apply(template, body):
        template.version += 1
        template.updated_at = clock.now()
    await session.flush()
    return template


async def archive_template(session: AsyncSession, key: str) -> None:
    """Archived templates are kept (their key stays taken) but no longer sent: messages still queued for one
    fail with the reason."""
    template = await get_template(session, key)
    if template.archived_at is None:
        template.archived_at = clock.now()
        template.updated_at = template.archived_at
    await session.flush()


def segments_out(info: SmsInfo) -> SmsSegmentsOut:
    return SmsSegmentsOut(encoding=info.encoding, characters=info.characters, segments=info.segments,
                          per_segment=info.per_segment)


def sample_segments(template: SavedTemplate) -> SmsSegmentsOut | None:
    """What an SMS template costs for a sample lead in its language (None for other channels)."""
    if template.channel != "sms":
        return None
    try:
        text = compile_text(template.body, "body").render(sample_context(template.locale))
    except NurtureError:
        return None
    return segments_out(sms_segments(text))
