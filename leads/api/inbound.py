"""/v1/inbound/email: the company's mail system posts each raw message it received for us."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from core.errors import Invalid, UnsupportedMediaType
from core.web import LeadsWriter, SessionDep, SettingsDep, read_body
from leads.intake.email import accept_email

router = APIRouter(prefix="/v1/inbound", tags=["inbound email"])

RAW_MESSAGE_TYPES = {"message/rfc822", "text/plain", "application/octet-stream"}


class EmailReceived(BaseModel):
    id: uuid.UUID
    kind: str
    lead_id: uuid.UUID | None


@router.post("/email", status_code=201, response_model=EmailReceived)
async def receive_inbound_email(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    _key: LeadsWriter,
    mail_from: Annotated[str | None, Query(max_length=320, description="SMTP envelope sender")] = None,
    rcpt_to: Annotated[str | None, Query(max_length=320, description="SMTP envelope recipient")] = None,
) -> EmailReceived:
    """A raw RFC 822 message: an inquiry becomes a lead; a bounce, complaint or auto-reply is
    recorded for the email channel. The same Message-ID again answers 200 with the first record."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in RAW_MESSAGE_TYPES:
        raise UnsupportedMediaType(
            "send the raw message as message/rfc822 (or text/plain, application/octet-stream)",
            field="content-type",
        )
    raw = await read_body(request, settings.max_email_bytes)
    if not raw.strip():
        raise Invalid("the message is empty", field="body")
    reception = await accept_email(session, raw, mail_from, rcpt_to, settings=settings)
    await session.commit()
    if reception.duplicate:
        response.status_code = 200
    email = reception.email
    return EmailReceived(id=email.id, kind=email.kind, lead_id=email.lead_id)
