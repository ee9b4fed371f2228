"""/v1/calls (the signed PBX webhook) and /v1/tracking-numbers (a phone number per campaign)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from core.ids import parse_id
from core.web import Marketer, SessionDep, SettingsDep, read_body
from leads.intake.calls import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    create_tracking_number,
    delete_tracking_number,
    list_tracking_numbers,
    parse_call,
    record_call,
    verify_signature,
)

router = APIRouter(prefix="/v1/calls", tags=["calls"])
numbers_router = APIRouter(prefix="/v1/tracking-numbers", tags=["calls"])

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


class TrackingNumberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=64)
    campaign: str | None = Field(default=None, max_length=200)
    source: str | None = Field(default=None, max_length=200)
    medium: str | None = Field(default=None, max_length=200)
    label: str | None = Field(default=None, max_length=200)


class TrackingNumberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    number: str
    campaign: str | None
    source: str | None
    medium: str | None
    label: str | None
    created_at: datetime


class TrackingNumberList(BaseModel):
    items: list[TrackingNumberOut]


@numbers_router.post("", status_code=201, response_model=TrackingNumberOut)
async def add_tracking_number(
    body: TrackingNumberIn, session: SessionDep, settings: SettingsDep, _key: Marketer
) -> TrackingNumberOut:
    """Publish a number in a campaign: calls to it are credited to that campaign (409 if taken)."""
    tracked = await create_tracking_number(
        session, body.number, settings.default_region,
        **{k: _blank_is_none(getattr(body, k)) for k in ("campaign", "source", "medium", "label")},
    )
    await session.commit()
    return TrackingNumberOut.model_validate(tracked)


@numbers_router.get("", response_model=TrackingNumberList)
async def tracking_numbers(session: SessionDep, _key: Marketer) -> TrackingNumberList:
    items = await list_tracking_numbers(session)
    return TrackingNumberList(items=[TrackingNumberOut.model_validate(n) for n in items])


@numbers_router.delete("/{number_id}", status_code=204)
async def remove_tracking_number(number_id: str, session: SessionDep, _key: Marketer) -> Response:
    """Stop tracking a number; calls already recorded keep their campaign."""
    await delete_tracking_number(session, parse_id(number_id, "id"))
    await session.commit()
    return Response(status_code=204)


def _blank_is_none(value: str | None) -> str | None:
    return value.strip() or None if value else None
