"""Previews and test sends: a saved template rendered for a real or a sample lead, and queued to one
address as a transactional message.
Takes an AsyncSession and never commits: the endpoint owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from channels import content
from channels.ledger import Outgoing, queue_message
from channels.models import Template as SavedTemplate
from channels.saved_templates import check_live, segments_out
from channels.schemas import LinkOut, TemplatePreviewIn, TemplatePreviewOut, TestSendIn
from channels.setup import mailer
from channels.templates import EmailTemplate, Kind, compile_email, compile_text, sample_context, sms_segments
from core.emails import normalize_email
from core.errors import Invalid
from core.ids import new_id
from core.phones import e164
from core.settings import Settings
from core.text import check_text
from leads.models import Lead
from leads.service import get_lead

MAX_CONTEXT_DEPTH = 8


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
    check_live(template)
    recipient = test_recipient(template.channel, body.to)
    lead_id = (await get_lead(session, body.lead_id)).id if body.lead_id is not None else None
    message_id, _ = await queue_message(session, Outgoing(
        key=f"test:{uuid.uuid4()}", channel=template.channel, recipient=recipient, kind="transactional",
        lead_id=lead_id, template=template.key,
    ))
    return message_id
