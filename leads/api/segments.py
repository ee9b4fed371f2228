"""/v1/segments: saved filters, their members, refresh (entered/left events) and preview.

Reading needs leads:read; defining segments needs forms:write, the marketer's set-up scope."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from core.ids import parse_id
from core.paging import keyset_page, parse_limit
from core.web import LeadsReader, Marketer, SessionDep
from leads.models import Lead, Segment
from leads.schemas import LeadOut, LeadPage
from leads.segments import (
    count_members,
    create_segment,
    get_segment,
    members_query,
    refresh_segment,
    segment_condition,
    update_segment,
)

router = APIRouter(prefix="/v1/segments", tags=["segments"])

PREVIEW_SIZE = 20


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    filter: dict[str, Any]


class SegmentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    filter: dict[str, Any] | None = None


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: dict[str, Any]
    limit: int = Field(default=PREVIEW_SIZE, ge=1, le=100)


class SegmentOut(BaseModel):
    id: uuid.UUID
    name: str
    filter: dict[str, Any]
    member_count: int = Field(description="Leads matching the filter now")
    refreshed_member_count: int = Field(description="Members at the last refresh")
    refreshed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class RefreshOut(BaseModel):
    entered: int
    left: int
    member_count: int


class PreviewOut(BaseModel):
    count: int
    leads: list[LeadOut]


async def _out(session: Any, segment: Segment) -> SegmentOut:
    return SegmentOut(
        id=segment.id, name=segment.name, filter=segment.filter,
        member_count=await count_members(session, segment.filter),
        refreshed_member_count=segment.member_count, refreshed_at=segment.refreshed_at,
        created_at=segment.created_at, updated_at=segment.updated_at,
    )


@router.get("", response_model=list[SegmentOut])
async def list_segments(session: SessionDep, _key: LeadsReader) -> list[SegmentOut]:
    from sqlalchemy import select

    rows = await session.scalars(select(Segment).order_by(Segment.name))
    return [await _out(session, s) for s in rows]


@router.post("", status_code=201, response_model=SegmentOut)
async def post_segment(body: SegmentIn, session: SessionDep, response: Response, _key: Marketer) -> SegmentOut:
    segment = await create_segment(session, body.name, body.filter)
    await session.commit()
    response.headers["location"] = f"/v1/segments/{segment.id}"
    return await _out(session, segment)


@router.post("/preview", response_model=PreviewOut)
async def preview(body: PreviewIn, session: SessionDep, _key: LeadsReader) -> PreviewOut:
    """How many leads a filter matches now, and the first few, without saving anything."""
    condition = await segment_condition(session, body.filter)
    leads = await session.scalars(members_query(condition).order_by(Lead.created_at, Lead.id).limit(body.limit))
    return PreviewOut(
        count=await count_members(session, body.filter),
        leads=[LeadOut.model_validate(lead) for lead in leads],
    )


@router.get("/{segment_id}", response_model=SegmentOut)
async def read_segment(segment_id: str, session: SessionDep, _key: LeadsReader) -> SegmentOut:
    return await _out(session, await get_segment(session, parse_id(segment_id, "segment_id")))


@router.patch("/{segment_id}", response_model=SegmentOut)
async def patch_segment(segment_id: str, body: SegmentPatch, session: SessionDep, _key: Marketer) -> SegmentOut:
    segment = await get_segment(session, parse_id(segment_id, "segment_id"))
    await update_segment(session, segment, body.model_dump(exclude_unset=True))
    await session.commit()
    return await _out(session, segment)


@router.delete("/{segment_id}", status_code=204)
async def delete_segment(segment_id: str, session: SessionDep, _key: Marketer) -> Response:
    segment = await get_segment(session, parse_id(segment_id, "segment_id"))
    await session.delete(segment)
    await session.commit()
    return Response(status_code=204)


@router.get("/{segment_id}/members", response_model=LeadPage)
async def members(
    segment_id: str,
    session: SessionDep,
    _key: LeadsReader,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[str | None, Query(description="1 to 500, default 50")] = None,
) -> LeadPage:
    """Leads matching the segment now, oldest first."""
    segment = await get_segment(session, parse_id(segment_id, "segment_id"))
    stmt = members_query(await segment_condition(session, segment.filter))
    page = await keyset_page(session, stmt, Lead.created_at, Lead.id, cursor, parse_limit(limit))
    return LeadPage(items=[LeadOut.model_validate(x) for x in page.items], next_cursor=page.next_cursor)


@router.post("/{segment_id}/refresh", response_model=RefreshOut)
async def refresh(segment_id: str, session: SessionDep, _key: Marketer) -> RefreshOut:
    """Recompute membership; emits segment.entered / segment.left for each lead that changed."""
    segment = await get_segment(session, parse_id(segment_id, "segment_id"))
    entered, left = await refresh_segment(session, segment)
    await session.commit()
    return RefreshOut(entered=entered, left=left, member_count=segment.member_count)
