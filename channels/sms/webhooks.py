"""What SMS providers post back: delivery receipts (the message reached the phone, or never will) and
the recipients' replies (STOP unsubscribes at once, START lifts it). Authenticated by the provider's
own signature (Twilio) or by the `key` in the URL given to the provider (a generic gateway)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import messages_t, suppressions_t
from channels.setup import json_setting
from channels.sms.keywords import is_start, is_stop
from channels.sms.provider import SmsProvider
from channels.sms.receipts import DELIVERED, UNDELIVERED
from channels.sms.setup import provider_from_config
from channels.sms.twilio import TwilioSms
from core import clock
from core.db import insert_ignore
from core.errors import Invalid, NotFound, Unauthorized, UnsupportedMediaType
from core.ids import new_id
from core.settings import Settings
from core.tokens import constant_time_equal
from core.web import SessionDep, SettingsDep, read_body
from leads.models import Lead
from leads.schemas import ConsentIn
from leads.service import record_activity, record_consent

router = APIRouter(prefix="/v1/sms", tags=["sms"])
MAX_HOOK_BYTES = 64 * 1024
# A receipt's error that means the number will never take a message: suppress it like a hard bounce.
DEAD_NUMBER = ("30005", "30006", "21211", "21614")


def hook_key(settings: Settings) -> str:
    """The `key` a generic gateway puts in the receipt and reply URLs nurture gives it."""
    return settings.derived_secret("sms-hooks")[:32]


async def _provider(request: Request, settings: Settings) -> tuple[SmsProvider, dict[str, Any]]:
    """The configured provider and the posted fields, once the request is proven to come from it."""
    if not settings.sms_provider.strip():
        raise NotFound("no SMS provider is configured", field="sms_provider")
    provider = provider_from_config(json_setting(settings.sms_provider, "sms_provider"))
    body = await read_body(request, MAX_HOOK_BYTES)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)  # what Twilio signs
    if media == "application/json":
        try:
            fields = json.loads(body)
        except ValueError:
            raise Invalid("the body is not JSON", field="body") from None
        if not isinstance(fields, dict):
            raise Invalid("a JSON object is expected", field="body")
    elif media in ("application/x-www-form-urlencoded", ""):
        fields = dict(pairs)
    else:
        raise UnsupportedMediaType("post the receipt as a form or JSON", field="content-type")
    if isinstance(provider, TwilioSms):
        url = f"{settings.base_url.rstrip('/')}{request.url.path}"
        if request.url.query:
            url += f"?{request.url.query}"
        signature = request.headers.get("x-twilio-signature", "")
        if not provider.signed(url, pairs, signature):
            raise Unauthorized("the Twilio signature does not match", field="x-twilio-signature")
    elif not constant_time_equal(request.query_params.get("key", ""), hook_key(settings)):
        raise Unauthorized("the key in the URL is not this install's", field="key")
    return provider, fields


@router.post("/receipts", status_code=204, response_class=Response)
async def receipt(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """A delivery receipt: the message is marked delivered or undelivered; a number that will never
    take a message is suppressed."""
    provider, fields = await _provider(request, settings)
    got = provider.receipt(fields)
    await provider.close()
    m = messages_t.c
    found = (await session.execute(
        select(m.id, m.lead_id, m.recipient).where(m.channel == "sms", m.provider_id == got.provider_id)
    )).first()
    if found is None:
        raise NotFound("no message with this provider id", field="provider_id")
    if got.state in (DELIVERED, UNDELIVERED):
        now = clock.now()
        await session.execute(update(messages_t).where(m.id == found.id).values(
            delivery_status=got.state, delivered_at=now if got.state == DELIVERED else None,
            reason=(got.error or None) if got.state == UNDELIVERED else None, updated_at=now,
        ))
        if got.state == UNDELIVERED and (got.error or "").split(" ")[0] in DEAD_NUMBER:
            await session.execute(insert_ignore(session, suppressions_t).values(
                id=new_id(), channel="sms", address=found.recipient.lower(), topic="", reason="hard_bounce",
                lead_id=found.lead_id, message_id=found.id, detail=got.error, created_at=now,
            ))
    await session.commit()
    return Response(status_code=204)


@router.post("/inbound", status_code=204, response_class=Response)
async def inbound(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """A recipient's reply: STOP (СТОП, …) stops every SMS to the number at once, START lifts it."""
    provider, fields = await _provider(request, settings)
    await provider.close()
    number = str(fields.get("From") or fields.get("from") or fields.get("phone") or "").strip()
    text = str(fields.get("Body") or fields.get("text") or fields.get("body") or "")
    if not number:
        raise Invalid("the sender's number is missing", field="from")
    await reply(session, number, text, settings)
    await session.commit()
    return Response(status_code=204)


async def reply(session: AsyncSession, number: str, text: str, settings: Settings) -> str | None:
    """Act on a reply; returns "stop", "start" or None (an ordinary reply, left alone)."""
    s = suppressions_t.c
    leads = list(await session.scalars(select(Lead).where(Lead.phone == number, Lead.erased_at.is_(None))))
    if is_stop(text):
        await session.execute(insert_ignore(session, suppressions_t).values(
            id=new_id(), channel="sms", address=number.lower(), topic="", reason="unsubscribed",
            lead_id=leads[0].id if leads else None, detail="replied STOP", created_at=clock.now(),
        ))
        for lead in leads:
            await record_activity(session, lead.id, "unsubscribed", {"channel": "sms", "source": "reply"})
            await record_consent(session, lead, ConsentIn(purpose=settings.consent_purpose, granted=False),
                                 "sms reply", None)
        return "stop"
    if is_start(text):
        await session.execute(delete(suppressions_t).where(
            s.channel == "sms", s.address == number.lower(), s.reason.in_(("unsubscribed", "blocked"))
        ))
        for lead in leads:
            await record_activity(session, lead.id, "resubscribed", {"channel": "sms", "source": "reply"})
            await record_consent(session, lead, ConsentIn(purpose=settings.consent_purpose, granted=True),
                                 "sms reply", None)
        return "start"
    return None
