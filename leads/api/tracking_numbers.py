"""/v1/tracking-numbers: a phone number per campaign, so a call to it is credited there (the call
webhook itself is leads.public.calls)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from core.ids import parse_id
from core.web import Marketer, SessionDep, SettingsDep
from leads.intake.calls import (
    create_tracking_number,
    delete_tracking_number,
    list_tracking_numbers,
)

router = APIRouter(prefix="/v1/tracking-numbers", tags=["calls"])




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


@router.post("", status_code=201, response_model=TrackingNumberOut)
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


@router.get("", response_model=TrackingNumberList)
async def tracking_numbers(session: SessionDep, _key: Marketer) -> TrackingNumberList:
    items = await list_tracking_numbers(session)
    return TrackingNumberList(items=[TrackingNumberOut.model_validate(n) for n in items])


@router.delete("/{number_id}", status_code=204)
async def remove_tracking_number(number_id: str, session: SessionDep, _key: Marketer) -> Response:
    """Stop tracking a number; calls already recorded keep their campaign."""
    await delete_tracking_number(session, parse_id(number_id, "id"))
    await session.commit()
    return Response(status_code=204)


def _blank_is_none(value: str | None) -> str | None:
    return value.strip() or None if value else None
