"""POST /v1/events/batch: server-side behaviour events, many at once (API key, leads:write). One
event at a time, and the tracker's, are leads.public.tracker."""

from __future__ import annotations

from fastapi import APIRouter, Request

from core.text import check_text
from core.web import LeadsWriter, SessionDep, SettingsDep, client_ip
from leads.intake.events import EventBatchIn, record_events

router = APIRouter(tags=["events"])


@router.post("/v1/events/batch", status_code=202)
async def post_events(body: EventBatchIn, request: Request, session: SessionDep, settings: SettingsDep,
                      _key: LeadsWriter) -> dict[str, int]:
    """Up to 500 server-side events in one request, stored all together or not at all (an error
    names the event: `events.<i>.<field>`). Same rules as one event posted with a key."""
    check_text(body.model_dump(mode="json"), "events")
    stored = await record_events(session, body.events, client_ip(request, settings), settings.signing_keys())
    await session.commit()
    return {"accepted": stored}
