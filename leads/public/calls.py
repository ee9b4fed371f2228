"""POST /v1/calls: the call-tracking service's or PBX's webhook, signed with the shared call secret."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from core.web import SessionDep, SettingsDep, read_body
from leads.intake.calls import SIGNATURE_HEADER, TIMESTAMP_HEADER, parse_call, record_call, verify_signature

router = APIRouter(prefix="/v1/calls", tags=["calls"])

MAX_CALL_BYTES = 1024 * 1024


class CallRecorded(BaseModel):
    lead_id: uuid.UUID | None = Field(description="null when the caller's number was withheld")
    activity_id: uuid.UUID


@router.post("", status_code=201, response_model=CallRecorded)
async def receive_call(
    request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> CallRecorded:
    """A call from the PBX or call-tracking service, signed with the shared call secret.

    Headers: `X-Nurture-Timestamp: <unix seconds>` and
    `X-Nurture-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`.
    A retry with the same `call_id` (or, without one, the same caller, numbers, start, status and
    length) answers 200 with the ids of the first delivery. A withheld number (an empty caller,
    "anonymous", "private", …) is recorded for the campaign with `lead_id` null.
    """
    body = await read_body(request, MAX_CALL_BYTES)
    sent_at = verify_signature(
        request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), body, settings.call_secret()
    )
    call = parse_call(body, request.headers.get("content-type", ""), settings.default_region, sent_at)
    recorded = await record_call(session, call)
    await session.commit()
    if recorded.duplicate:
        response.status_code = 200
    return CallRecorded(lead_id=recorded.lead_id, activity_id=recorded.activity_id)
