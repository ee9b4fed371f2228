"""What the channels API does: saved templates (validated on save, versioned, archived), previews and test
sends, and the captured outbox, the ledger and the suppression list as people look at them.
Takes an AsyncSession and never commits: the endpoint owns the transaction."""

from __future__ import annotations

import email
import re
import uuid
from collections.abc import Callable, Mapping
from email import policy
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import Row, Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from channels import content
from channels.ledger import Outgoing, queue_message
from channels.models import CapturedMail, Message, Suppression, suppressions_t
from channels.models import Template as SavedTemplate
from channels.schemas import (
    KEY_PATTERN,
    FromStarterIn,
    LinkOut,
    SmsSegmentsOut,
    StarterOut,
    SuppressionIn,
    TemplateContent,
    TemplateIn,
    TemplatePreviewIn,
    TemplatePreviewOut,
    TemplateReplace,
    TestSendIn,
)
from channels.setup import mailer
from channels.starters import STARTERS, starter
from channels.templates import (
    EmailTemplate,
    Kind,
    SmsInfo,
    TemplateInvalid,
    compile_email,
    compile_text,
    sample_context,
    sms_segments,
    validate,
    validate_text,
)
from core import clock
from core.auth import ApiKey, Scope
from core.db import flush_unique, insert_ignore
from core.emails import normalize_email
from core.errors import Conflict, Forbidden, Invalid, NotFound, NurtureError
from core.ids import new_id
from core.paging import Page, decode_cursor, encode_cursor
from core.phones import normalize_phone
from core.settings import Settings
from core.text import check_text, scrub
from leads.models import Lead
from leads.service import get_lead

_KEY = re.compile(KEY_PATTERN)
LIFTABLE = ("manual", "unsubscribed")  # suppressions a marketer may lift; the others (bounces, complaints) need admin
MAX_CONTEXT_DEPTH = 8

# --- templates -----------------------------------------------------------------------------------


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


def _live(template: SavedTemplate) -> None:
    if template.archived_at is not None:
        raise Conflict(f"the template '{template.key}' is archived", field="template_key")


async def replace_template(session: AsyncSession, key: str, body: TemplateReplace) -> SavedTemplate:
    """Replace the editable fields; a change makes a new version (messages render the current one)."""
    template = await get_template(session, key, for_update=True)
    if body.channel is not None and body.channel != template.channel:
        raise Invalid(f"a template's channel cannot change (this one is {template.channel}); save a new template",
                      field="channel")
    _live(template)
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


# --- previews and test sends ---------------------------------------------------------------------


class _Draft(NamedTuple):
    """What the sender's content loader reads of a ledger row, for a message that is only being previewed."""

    id: uuid.UUID
    lead_id: uuid.UUID | None
    channel: str
    recipient: str
    kind: str
    template: str | None = None
    campaign: str | None = None
    step: str | None = None
    payload: dict[str, Any] = {}


async def lead_context(session: AsyncSession, lead: Lead, channel: str, settings: Settings) -> dict[str, Any]:
    """The lead's template context exactly as the sender builds it (profile, score, grade, stage, sender)."""
    row = cast(Row[Any], _Draft(new_id(), lead.id, channel, lead.email or "", "transactional"))
    material = await content.load(session, [row], mailer(settings))
    return material.context(row)


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_CONTEXT_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`, dictionaries merged key by key (`{"lead": {"city": …}}` changes the city only)."""
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        out[key] = merged(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return out


async def preview(session: AsyncSession, template: SavedTemplate, body: TemplatePreviewIn,
                  settings: Settings) -> TemplatePreviewOut:
    """The template rendered for a real lead or a sample one, links as written (not rewritten for tracking)."""
    context = sample_context(body.locale or template.locale)
    if body.lead_id is not None:
        lead = await get_lead(session, body.lead_id)
        context = {**context, **await lead_context(session, lead, template.channel, settings)}
    if body.context:
        if _depth(body.context) > MAX_CONTEXT_DEPTH:
            raise Invalid(f"nests deeper than {MAX_CONTEXT_DEPTH} levels", field="context")
        check_text(body.context, "context")
        context = merged(context, body.context)
    if template.channel == "email":
        rendered = compile_email(EmailTemplate(subject=template.subject, body=template.body,
                                               preheader=template.preheader, kind=_kind(template.kind))).render(context)
        return TemplatePreviewOut(
            subject=rendered.subject, preheader=rendered.preheader, html=rendered.html, text=rendered.text,
            links=[LinkOut(url=link.url, tag=link.tag) for link in rendered.links],
        )
    text = compile_text(template.body, "body").render(context)
    return TemplatePreviewOut(text=text, segments=segments_out(sms_segments(text)) if template.channel == "sms"
                              else None)


def _kind(value: str) -> Kind:
    return "transactional" if value == "transactional" else "marketing"


def test_recipient(channel: str, to: str) -> str:
    check_text(to, "to")
    if channel == "email":
        return normalize_email(to, "to")
    if channel == "sms":
        return e164(to, "to")
    if channel == "postal":
        raise Invalid("a postal template goes into an export file, not to an address; preview it instead",
                      field="to")
    if not to.strip():
        raise Invalid("must not be empty", field="to")
    return to.strip()


async def queue_test(session: AsyncSession, template: SavedTemplate, body: TestSendIn) -> uuid.UUID:
    """Queue the template to one address as a transactional message (no quiet hours, no consent needed; the
    suppression list still holds). The worker's sender sends it on its next pass."""
    _live(template)
    recipient = test_recipient(template.channel, body.to)
    lead_id = (await get_lead(session, body.lead_id)).id if body.lead_id is not None else None
    message_id, _ = await queue_message(session, Outgoing(
        key=f"test:{uuid.uuid4()}", channel=template.channel, recipient=recipient, kind="transactional",
        lead_id=lead_id, template=template.key,
    ))
    return message_id


# --- paging --------------------------------------------------------------------------------------

RowT = TypeVar("RowT", CapturedMail, Message, Suppression)


async def newest_first(session: AsyncSession, stmt: Select[Any], model: type[RowT], at: str,
                       cursor: str | None, limit: int) -> Page:
    """A page of rows, newest first, by id: ids are time-ordered (UUIDv7) and the primary key's index serves
    the order on the big tables (a sort by time would read the whole ledger). The cursor is the house's
    (time, id) cursor; only its id is compared."""
    if cursor:
        _, seen = decode_cursor(cursor)
        stmt = stmt.where(model.id < seen)
    rows = list(await session.scalars(stmt.order_by(model.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], at), rows[-1].id) if more and rows else None
    return Page(items=rows, next_cursor=next_cursor)


def text_filter(value: str | None, field: str) -> str | None:
    if value is None or not value.strip():
        return None
    check_text(value, field)
    return value.strip()


# --- the captured outbox -------------------------------------------------------------------------


async def list_captured(session: AsyncSession, to: str | None, cursor: str | None, limit: int) -> Page:
    stmt = select(CapturedMail).options(defer(CapturedMail.raw))
    if (recipient := text_filter(to, "to")) is not None:
        stmt = stmt.where(CapturedMail.recipient.in_({recipient, recipient.lower()}))
    return await newest_first(session, stmt, CapturedMail, "received_at", cursor, limit)


async def get_captured(session: AsyncSession, mail_id: uuid.UUID) -> CapturedMail:
    found = await session.get(CapturedMail, mail_id)
    if found is None:
        raise NotFound(f"no captured message {mail_id}", field="mail_id")
    return found


T = TypeVar("T")


def _or_none(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except (ValueError, LookupError, TypeError, AttributeError, UnicodeError):  # a part this package can't decode
        return None


def read_mail(raw: bytes) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """The plain-text and HTML parts (decoded) and the headers (RFC 2047 words decoded) of a captured message."""
    message = email.message_from_bytes(raw, policy=policy.default)

    def part(kind: str) -> str | None:
        found = message.get_body((kind,))  # type: ignore[attr-defined]
        return None if found is None else scrub(found.get_content())

    headers = []
    for name, value in message.raw_items():
        decoded = _or_none(lambda: str(policy.default.header_fetch_parse(name, value)))  # noqa: B023 - called now
        headers.append((scrub(name), scrub(decoded if decoded is not None else value)))
    return _or_none(lambda: part("plain")), _or_none(lambda: part("html")), headers


# --- the ledger ----------------------------------------------------------------------------------


async def list_messages(session: AsyncSession, filters: Mapping[str, Any], cursor: str | None, limit: int) -> Page:
    """Ledger rows, newest first; `filters` by column (lead_id, state, channel, campaign, template), None = any."""
    stmt = select(Message)
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(getattr(Message, column) == value)
    return await newest_first(session, stmt, Message, "created_at", cursor, limit)


async def get_message(session: AsyncSession, message_id: uuid.UUID) -> Message:
    found = await session.get(Message, message_id)
    if found is None:
        raise NotFound(f"no message {message_id}", field="message_id")
    return found


# --- suppressions --------------------------------------------------------------------------------


def e164(value: str, field: str) -> str:
    """A phone number written with its country code (+…), as E.164."""
    if not value.strip().startswith("+"):
        raise Invalid("must be an international number in E.164 form, such as +79123456789", field=field)
    return normalize_phone(value, None, field)


def suppressed_address(channel: str, address: str) -> str:
    """The address as the send-time check compares it: emails validated and lower-cased, SMS numbers E.164,
    chat ids and URLs lower-cased."""
    check_text(address, "address")
    if channel == "email":
        return normalize_email(address, "address")
    if channel == "sms":
        return e164(address, "address")
    value = address.strip().lower()
    if not value:
        raise Invalid("must not be empty", field="address")
    return value


async def add_suppression(session: AsyncSession, body: SuppressionIn) -> tuple[Suppression, bool]:
    """Suppress an address (for one topic, or every marketing message); returns the row and whether it is new
    (an address already suppressed for that topic keeps its row and reason)."""
    address = suppressed_address(body.channel, body.address)
    check_text(body.detail, "detail")
    lead_id = None
    if body.channel in ("email", "sms"):
        column = Lead.email if body.channel == "email" else Lead.phone
        lead_id = await session.scalar(select(Lead.id).where(column == address, Lead.merged_into_id.is_(None))
                                       .limit(1))
    s = suppressions_t.c
    made = (await session.execute(insert_ignore(session, suppressions_t).returning(s.id).values(
        id=new_id(), channel=body.channel, address=address, topic=body.topic, reason=body.reason, lead_id=lead_id,
        detail=body.detail, created_at=clock.now(),
    ))).scalar()
    row = await session.scalar(select(Suppression).where(
        Suppression.channel == body.channel, Suppression.address == address, Suppression.topic == body.topic))
    assert row is not None  # inserted now, or the insert was ignored because it exists
    return row, made is not None


async def list_suppressions(session: AsyncSession, channel: str | None, address: str | None, reason: str | None,
                            cursor: str | None, limit: int) -> Page:
    stmt = select(Suppression)
    if channel is not None:
        stmt = stmt.where(Suppression.channel == channel)
    if (wanted := text_filter(address, "address")) is not None:
        stmt = stmt.where(Suppression.address == wanted.lower())
    if reason is not None:
        stmt = stmt.where(Suppression.reason == reason)
    return await newest_first(session, stmt, Suppression, "created_at", cursor, limit)


async def lift_suppression(session: AsyncSession, suppression_id: uuid.UUID, key: ApiKey) -> None:
    """Delete a suppression: manual ones and unsubscribes by a marketer, bounces and complaints by an admin
    only (sending to such an address again harms the sender's reputation)."""
    found = await session.get(Suppression, suppression_id)
    if found is None:
        raise NotFound(f"no suppression {suppression_id}", field="suppression_id")
    if found.reason not in LIFTABLE and Scope.admin.value not in key.scopes:
        raise Forbidden(f"only an admin may lift a '{found.reason}' suppression", field="reason")
    await session.delete(found)
    await session.flush()
