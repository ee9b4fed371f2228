"""/v1/custom-fields: define, list and remove custom fields.

Scope forms:write: fields are set up by the marketer who designs forms (admin keys pass too);
a leads:write integration can fill values but not change the data model."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from core.ids import parse_id
from core.web import LeadsReader, Marketer, SessionDep
from leads.field_definitions import create_field, delete_field
from leads.models import CustomField

router = APIRouter(prefix="/v1/custom-fields", tags=["custom fields"])



class CustomFieldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Any = None
    label: Any = None
    type: Any = None
    required: Any = False
    choices: Any = None
    min_value: Any = None
    max_value: Any = None
    max_length: Any = None
    pattern: Any = None


class CustomFieldOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    label: str
    type: str
    required: bool
    choices: list[Any] | None
    min_value: float | None
    max_value: float | None
    max_length: int | None
    pattern: str | None
    created_at: datetime


@router.get("", response_model=list[CustomFieldOut])
async def list_fields(session: SessionDep, _key: LeadsReader) -> list[CustomFieldOut]:
    rows = await session.scalars(select(CustomField).order_by(CustomField.key))
    return [CustomFieldOut.model_validate(f) for f in rows]


@router.post("", status_code=201, response_model=CustomFieldOut)
async def post_field(body: CustomFieldIn, session: SessionDep, _key: Marketer) -> CustomFieldOut:
    """Types: text, number, integer, boolean, date, choice, email, url. 409 if the key exists."""
    spec = await create_field(session, body.model_dump())
    await session.commit()
    return CustomFieldOut.model_validate(spec)


@router.delete("/{field_id}", status_code=204)
async def remove_field(field_id: str, session: SessionDep, _key: Marketer) -> Response:
    """Remove the definition and its values from every lead."""
    await delete_field(session, parse_id(field_id, "field_id"))
    await session.commit()
    return Response(status_code=204)
