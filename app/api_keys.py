"""/v1/api-keys: admins create, list and revoke API keys (the secret is shown once)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from core import clock
from core.auth import ApiKey, create_api_key
from core.errors import NotFound
from core.ids import parse_id
from core.web import Admin, SessionDep

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1)


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret; shown only in this response")


def _out(key: ApiKey) -> dict[str, object]:
    return {c: getattr(key, c) for c in ApiKeyOut.model_fields}


@router.post("", status_code=201, response_model=ApiKeyCreated)
async def create(body: ApiKeyIn, session: SessionDep, _admin: Admin) -> ApiKeyCreated:
    key, raw = await create_api_key(session, body.name, body.scopes)
    await session.commit()
    return ApiKeyCreated(**_out(key), key=raw)  # type: ignore[arg-type]


@router.get("", response_model=list[ApiKeyOut])
async def list_keys(session: SessionDep, _admin: Admin) -> list[ApiKeyOut]:
    keys = await session.scalars(select(ApiKey).order_by(ApiKey.created_at))
    return [ApiKeyOut(**_out(k)) for k in keys]  # type: ignore[arg-type]


@router.delete("/{key_id}", status_code=204)
async def revoke(key_id: str, session: SessionDep, _admin: Admin) -> Response:
    key = await session.get(ApiKey, parse_id(key_id, "key_id"))
    if key is None:
        raise NotFound("no such API key", field="key_id")
    if key.revoked_at is None:
        key.revoked_at = clock.now()
        await session.commit()
    return Response(status_code=204)
