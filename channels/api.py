"""/v1/templates, /v1/outbox, /v1/messages, /v1/suppressions, /v1/postal: what marketers save and send,
and what went out.

Reading needs leads:read or forms:write; saving templates, test sends and suppressions need forms:write;
lifting a bounce or complaint suppression needs admin. Previews and test sends with a lead_id also need
leads:read, since they show the lead's data; the print house's letters need leads:read."""

from __future__ import annotations

import io
import re
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from channels import captured, messages, previews, saved_templates, suppressions
from channels.letters import export
from channels.models import Template
from channels.schemas import (
    CapturedDetail,
    CapturedOut,
    CapturedPage,
    FromStarterIn,
    LedgerChannel,
    LedgerState,
    MessageOut,
    MessagePage,
    Reason,
    StarterOut,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
    TemplateIn,
    TemplateOut,
    TemplatePreviewIn,
    TemplatePreviewOut,
    TemplateReplace,
    TestSendIn,
    TestSendOut,
)
from core.auth import Scope, require
from core.errors import Invalid
from core.ids import parse_id
from core.paging import parse_limit
from core.text import text_filter
from core.web import LeadsReader, Marketer, SessionDep, SettingsDep, SetupReader

router = APIRouter(tags=["channels"])

Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
Limit = Annotated[str | None, Query(description="1 to 100, default 50")]
OUTBOX_LIMIT = 100


def _template_out(template: Template) -> TemplateOut:
    out = TemplateOut.model_validate(template)
    out.segments = saved_templates.sample_segments(template)
    return out


def _limit(value: str | None, most: int = OUTBOX_LIMIT) -> int:
    limit = parse_limit(value)
    if limit > most:
        raise Invalid(f"must be a whole number from 1 to {most}", field="limit")
    return limit


# --- templates -----------------------------------------------------------------------------------


@router.post("/v1/templates", status_code=201, response_model=TemplateOut)
async def create_template(body: TemplateIn, session: SessionDep, _key: Marketer) -> TemplateOut:
    """Save a template, validated first: every problem (field, line, message) in `error.details`, 422."""
    template = await saved_templates.create_template(session, body)
    await session.commit()
    return _template_out(template)


@router.get("/v1/templates", response_model=list[TemplateOut])
async def list_templates(session: SessionDep, _key: SetupReader, archived: bool = False) -> list[TemplateOut]:
    """Saved templates by key; archived ones too with `?archived=true`."""
    return [_template_out(t) for t in await saved_templates.list_templates(session, archived)]


@router.get("/v1/templates/starters", response_model=list[StarterOut])
async def list_starters(_key: SetupReader) -> list[StarterOut]:
    """Ready email templates to start from (each validates as it is)."""
    return saved_templates.starters()


@router.post("/v1/templates/from-starter", status_code=201, response_model=TemplateOut)
async def create_from_starter(body: FromStarterIn, session: SessionDep, _key: Marketer) -> TemplateOut:
    template = await saved_templates.create_from_starter(session, body)
    await session.commit()
    return _template_out(template)


@router.get("/v1/templates/{template_key}", response_model=TemplateOut)
async def read_template(template_key: str, session: SessionDep, _key: SetupReader) -> TemplateOut:
    return _template_out(await saved_templates.get_template(session, template_key))


@router.put("/v1/templates/{template_key}", response_model=TemplateOut)
async def replace_template(template_key: str, body: TemplateReplace, session: SessionDep,
                           _key: Marketer) -> TemplateOut:
    """Replace the editable fields (validated as on create); a change makes the next version."""
    template = await saved_templates.replace_template(session, template_key, body)
    await session.commit()
    return _template_out(template)


@router.delete("/v1/templates/{template_key}", status_code=204)
async def archive_template(template_key: str, session: SessionDep, _key: Marketer) -> Response:
    """Archive: kept for the record, no longer sent (messages still queued for it fail, saying why)."""
    await saved_templates.archive_template(session, template_key)
    await session.commit()
    return Response(status_code=204)


@router.post("/v1/templates/{template_key}/preview", response_model=TemplatePreviewOut,
             response_model_exclude_none=True)
async def preview_template(template_key: str, body: TemplatePreviewIn, session: SessionDep,
                           settings: SettingsDep, key: SetupReader) -> TemplatePreviewOut:
    """Render for a lead (`lead_id`) or a sample lead (`locale`), `context` merged over; links not rewritten.
    A value that breaks the template: 422 naming the field, with the line in `error.details`."""
    if body.lead_id is not None:
        require(key, Scope.leads_read)
    template = await saved_templates.get_template(session, template_key)
    return await previews.preview(session, template, body, settings)


@router.post("/v1/templates/{template_key}/test", status_code=202, response_model=TestSendOut)
async def send_test(template_key: str, body: TestSendIn, session: SessionDep, key: Marketer) -> TestSendOut:
    """Queue the template to one address as a transactional message; the sender sends it on its next pass."""
    if body.lead_id is not None:
        require(key, Scope.leads_read)
    template = await saved_templates.get_template(session, template_key)
    message_id = await previews.queue_test(session, template, body)
    await session.commit()
    return TestSendOut(message_id=message_id)


# --- the captured outbox (NURTURE_SMTP_URL=capture://) -------------------------------------------


@router.get("/v1/outbox/messages", response_model=CapturedPage)
async def list_captured(session: SessionDep, _key: SetupReader, to: str | None = None, cursor: Cursor = None,
                        limit: Limit = None) -> CapturedPage:
    """Mail the capture server kept, newest first; `to` filters by recipient."""
    page = await captured.list_captured(session, to, cursor, _limit(limit))
    return CapturedPage(items=[CapturedOut.model_validate(m) for m in page.items], next_cursor=page.next_cursor)


@router.get("/v1/outbox/messages/{mail_id}", response_model=CapturedDetail)
async def read_captured(mail_id: str, session: SessionDep, _key: SetupReader) -> CapturedDetail:
    """One captured message with its text and HTML parts decoded and its headers."""
    mail = await captured.get_captured(session, parse_id(mail_id, "mail_id"))
    text, html, headers = captured.read_mail(mail.raw)
    return CapturedDetail(**CapturedOut.model_validate(mail).model_dump(), text=text, html=html, headers=headers)


@router.get("/v1/outbox/messages/{mail_id}/raw", response_class=Response,
            responses={200: {"content": {"message/rfc822": {}}}})
async def read_captured_raw(mail_id: str, session: SessionDep, _key: SetupReader) -> Response:
    """The message as it would have gone over SMTP."""
    mail = await captured.get_captured(session, parse_id(mail_id, "mail_id"))
    return Response(mail.raw, media_type="message/rfc822",
                    headers={"content-disposition": f'attachment; filename="{mail.id}.eml"'})


# --- the ledger ----------------------------------------------------------------------------------


@router.get("/v1/messages", response_model=MessagePage)
async def list_messages(
    session: SessionDep, _key: SetupReader, lead_id: uuid.UUID | None = None, state: LedgerState | None = None,
    channel: LedgerChannel | None = None, campaign: str | None = None, template: str | None = None,
    cursor: Cursor = None, limit: Limit = None,
) -> MessagePage:
    """Messages of every channel and where each stands, newest first."""
    filters = {
        "lead_id": lead_id, "state": state, "channel": channel,
        "campaign": text_filter(campaign, "campaign"), "template": text_filter(template, "template"),
    }
    page = await messages.list_messages(session, filters, cursor, _limit(limit))
    return MessagePage(items=[MessageOut.model_validate(m) for m in page.items], next_cursor=page.next_cursor)


@router.get("/v1/messages/{message_id}", response_model=MessageOut)
async def read_message(message_id: str, session: SessionDep, _key: SetupReader) -> MessageOut:
    return MessageOut.model_validate(await messages.get_message(session, parse_id(message_id, "message_id")))


# --- suppressions --------------------------------------------------------------------------------


@router.get("/v1/suppressions", response_model=SuppressionPage)
async def list_suppressions(
    session: SessionDep, _key: SetupReader, channel: LedgerChannel | None = None, address: str | None = None,
    reason: Reason | None = None, cursor: Cursor = None, limit: Limit = None,
) -> SuppressionPage:
    """Addresses nothing (or nothing on a topic) is sent to, newest first."""
    page = await suppressions.list_suppressions(session, channel, address, reason, cursor, _limit(limit))
    return SuppressionPage(items=[SuppressionOut.model_validate(s) for s in page.items], next_cursor=page.next_cursor)


@router.post("/v1/suppressions", status_code=201, response_model=SuppressionOut)
async def add_suppression(body: SuppressionIn, session: SessionDep, response: Response,
                          _key: Marketer) -> SuppressionOut:
    """Suppress an address; 200 with the existing row when it is suppressed for that topic already."""
    row, created = await suppressions.add_suppression(session, body)
    await session.commit()
    if not created:
        response.status_code = 200
    return SuppressionOut.model_validate(row)


@router.delete("/v1/suppressions/{suppression_id}", status_code=204)
async def lift_suppression(suppression_id: str, session: SessionDep, key: Marketer) -> Response:
    """Lift a suppression: manual ones and unsubscribes with forms:write, bounces and complaints by an admin."""
    await suppressions.lift_suppression(session, parse_id(suppression_id, "suppression_id"), key)
    await session.commit()
    return Response(status_code=204)


# --- postal ------------------------------------------------------------------------------------


@router.get("/v1/postal/export.csv", response_class=Response, tags=["postal"])
async def postal_export(session: SessionDep, _key: LeadsReader,
                        campaign: Annotated[str | None, Query(max_length=100)] = None,
                        since: datetime | None = None, until: datetime | None = None, excel: bool = False) -> Response:
    """The letters sent through the postal channel, for the print house (CSV, UTF-8; `excel`: with a
    BOM and ';' for Excel in a Russian locale)."""
    out = io.StringIO(newline="")
    await export(session, out, campaign=campaign, since=since, until=until, excel=excel)
    name = "letters-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", campaign or "").strip("-.") or "all")[:80] + ".csv"
    return Response(out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"'})
