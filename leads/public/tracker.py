"""What the tracker and websites call, with no API key: POST /v1/events (a page view, download or
custom event; servers may post with a key too), its CORS preflight, and GET /t.js, the
first-party tracker that sends them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from core.auth import Scope
from core.errors import NurtureError, RateLimited, UnsupportedMediaType
from core.ratelimit import retry_after, window_for
from core.settings import Settings
from core.text import check_text
from core.web import LeanRoute, client_ip, parse_json_object, read_body, require_scope
from leads.intake import invalid_from
from leads.intake.events import EventIn, PostedEvent, event_writer

router = APIRouter(tags=["events"], route_class=LeanRoute)

STATIC = Path(__file__).resolve().parents[1] / "static"  # package data of leads (pyproject.toml)
MAX_EVENT_BYTES = 64 * 1024
# Page views come far more often than form posts: ten times the form limit per IP.
EVENTS_PER_FORM_POST = 10
# The tracker posts with sendBeacon as text/plain (no CORS preflight); servers post JSON.
EVENT_TYPES = ("application/json", "text/plain")
CORS = {"access-control-allow-origin": "*"}


@router.post("/v1/events", status_code=202, response_model=None)
async def post_event(request: Request) -> Response:
    """Store a page view / download / custom event.

    Without an API key: the tracker's events for a visitor id, of type page_view, download or
    custom.<name>. With a key holding leads:write: any type except nurture's own activities, for
    a lead_id or email (409 for an email whose person was erased), and an explicit occurred_at.
    """
    settings: Settings = request.app.state.settings
    ip = client_ip(request, settings)
    try:
        window_for(request.app.state, "events", settings.form_rate_limit * EVENTS_PER_FORM_POST).check(ip)
        trusted = False
        if request.headers.get("authorization") or request.headers.get("x-api-key"):
            await require_scope(Scope.leads_write)(request)
            trusted = True
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in EVENT_TYPES:
            raise UnsupportedMediaType("post the event as JSON", field="content-type")
        body = await read_body(request, MAX_EVENT_BYTES)
        data = parse_json_object(body)
        try:
            event = EventIn.model_validate(data)
        except ValidationError as exc:
            raise invalid_from(exc) from None
        check_text(data)
        await event_writer(request.app.state).write(PostedEvent(event, ip, trusted, settings.signing_keys()))
    except NurtureError as exc:
        headers = {**CORS, **(retry_after(exc) if isinstance(exc, RateLimited) else {})}
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
    return JSONResponse({"accepted": True}, status_code=202, headers=CORS)


@router.options("/v1/events", include_in_schema=False)
async def events_preflight() -> Response:
    # Browsers may send JSON with fetch; API keys are for servers, so no Authorization header here.
    return Response(
        status_code=204,
        headers={**CORS, "access-control-allow-methods": "POST, OPTIONS",
                 "access-control-allow-headers": "content-type", "access-control-max-age": "86400"},
    )


@router.get("/t.js", include_in_schema=False)
async def tracker() -> Response:
    return Response(
        _asset("t.js"), media_type="application/javascript; charset=utf-8",
        headers={"cache-control": "public, max-age=3600"},
    )


@lru_cache
def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")
