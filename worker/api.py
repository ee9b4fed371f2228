"""/v1/events/status and /v1/events/failed: the pipeline's state and its dead letters (admins);
/v1/events/catalog: every event the domains declare, with its payload's JSON Schema."""

from __future__ import annotations

import inspect
import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from core.domains import event_types, installed
from core.errors import Invalid
from core.outbox import OutboxEvent
from core.web import Admin, LeadsReader, SessionDep, get_db
from worker.status import failed_events, failed_out, pipeline_status, retry_failed

router = APIRouter(prefix="/v1/events", tags=["event pipeline"])


class RetryIn(BaseModel):
    ids: list[uuid.UUID] | None = Field(default=None, description="Dead letters to retry; omit with all=true")
    all: bool = False


@router.get("/status")
async def status(request: Request, _admin: Admin) -> dict[str, Any]:
    return await pipeline_status(get_db(request), getattr(request.app.state, "queue", None))


@router.get("/failed")
async def list_failed(session: SessionDep, _admin: Admin, limit: int = 100) -> list[dict[str, Any]]:
    failed = await failed_events(session, min(max(limit, 1), 1000))
    names = dict((await session.execute(
        select(OutboxEvent.id, OutboxEvent.name).where(OutboxEvent.id.in_([f.event_id for f in failed]))
    )).tuples().all())
    return [failed_out(f, names.get(f.event_id)) for f in failed]


@router.post("/failed/retry")
async def retry(body: RetryIn, session: SessionDep, _admin: Admin) -> dict[str, int]:
    if body.all == (body.ids is not None):
        raise Invalid("give either ids or all=true", field="ids")
    queued = await retry_failed(session, None if body.all else body.ids)
    await session.commit()
    return {"queued": queued}


@router.get("/catalog")
async def catalog(_reader: LeadsReader) -> list[dict[str, Any]]:
    """Every event the domains declare, by name: the domain that emits it, when it happens, and the
    JSON Schema of its payload (what a handler can rely on)."""
    types = event_types()
    domains = {event: domain.name for domain in installed() for event in domain.events}
    return [
        {
            "name": name, "domain": domains[kind], "description": inspect.cleandoc(kind.__doc__ or ""),
            "schema": kind.model_json_schema(),
        }
        for name, kind in sorted(types.items())
    ]
