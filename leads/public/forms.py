"""What a website's form calls, with no API key: the post itself (urlencoded, multipart or JSON),
its CORS preflight, the embed script and the built-in thank-you page.

What a browser sees (a plain HTML form, no JavaScript): success → 303 to the form's
success_url (or /v1/forms/{key}/thanks, a bilingual page). A bad value → 303 to the form's
error_url with `?nurture_error=<field>&nurture_form=<key>` when one is set (the site shows its
own message), else a small bilingual 422 page naming the field with a "back" link, which keeps
what the visitor typed. JSON clients (JSON body or Accept: application/json) get 201
{"lead_id"} or the usual error body.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from core.errors import Forbidden, Invalid, NurtureError, RateLimited, UnsupportedMediaType
from core.ids import new_id
from core.metrics import INTAKE_REJECTED
from core.ratelimit import retry_after, window_for
from core.settings import Settings
from core.web import LeanRoute, client_ip, get_db, parse_json_object, parse_urlencoded, read_body
from leads.intake.form_batch import form_batcher
from leads.intake.forms import get_form, live_forms, normalize_origin
from leads.intake.submissions import check_post, is_honeypot_hit, visit_from
from leads.models import Form

router = APIRouter(prefix="/v1/forms", tags=["forms"], route_class=LeanRoute)

STATIC = Path(__file__).resolve().parents[1] / "static"  # package data of leads (pyproject.toml)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "application/json")


@router.post("/{form_key}/submit", status_code=201, response_model=None)
async def submit(form_key: str, request: Request) -> Response:
    """A website's form post (urlencoded, multipart or JSON); no API key."""
    settings: Settings = request.app.state.settings
    ip = client_ip(request, settings)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    wants_json = media == "application/json" or "application/json" in request.headers.get("accept", "")
    form: Form | None = None
    cors: dict[str, str] = {}
    try:
        window_for(request.app.state, "forms", settings.form_rate_limit).check((form_key, ip))
        if media not in FORM_TYPES:
            raise UnsupportedMediaType(
                "post the form as urlencoded, multipart/form-data or JSON", field="content-type"
            )
        body = await read_body(request, settings.max_form_bytes)
        form = await live_forms(request.app.state).get(get_db(request), form_key)
        cors = _cors_headers(form, request, settings)
        values = await parse_form_body(media, request, body)
        if is_honeypot_hit(form, values):
            INTAKE_REJECTED.labels("form", "honeypot").inc()
            return _success(form, wants_json, str(new_id()), cors)
        visit = visit_from(values, request.headers.get("referer"), request.cookies.get("nurture_vid"), ip)
        post = await check_post(get_db(request), form, values, visit, settings.default_region)
        recorded = await form_batcher(request.app.state).record(post)
    except NurtureError as exc:
        INTAKE_REJECTED.labels("form", exc.code).inc()
        return _failure(exc, form, form_key, wants_json, cors)
    return _success(form, wants_json, str(recorded.lead_id), cors)


@router.options("/{form_key}/submit", include_in_schema=False)
async def preflight(form_key: str, request: Request) -> Response:
    """CORS preflight for JSON posts: answered only for origins the form allows."""
    settings: Settings = request.app.state.settings
    form = await live_forms(request.app.state).get(get_db(request), form_key)
    origin = request.headers.get("origin", "")
    if not origin or not _origin_allowed(form, origin, request, settings):
        raise Forbidden("this origin may not post to the form", field="origin")
    return Response(
        status_code=204,
        headers={
            "access-control-allow-origin": origin,
            "access-control-allow-methods": "POST, OPTIONS",
            "access-control-allow-headers": "content-type, accept",
            "access-control-max-age": "600",
            "vary": "Origin",
        },
    )


@router.get("/{form_key}/embed.js", include_in_schema=False)
async def embed(form_key: str, request: Request) -> Response:
    """JavaScript that renders the form where the <script> tag stands and posts it as JSON."""
    async with get_db(request).sessions() as session:
        form = await get_form(session, form_key, live_only=True)
    config = {
        "key": form.key,
        "fields": [
            {k: f.get(k) for k in ("name", "label", "type", "required", "max_length", "choices", "placeholder")}
            for f in form.fields or []
        ],
        "consent": {"wording": form.consent_wording, "required": form.consent_required}
        if form.consent_purpose else None,
        "honeypot": form.honeypot_field,
        "success_url": form.success_url,
    }
    # Safe inside any script context: no "</script>", no JS line separators.
    literal = (
        json.dumps(config, ensure_ascii=False).replace("<", "\\u003c")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )
    script = _asset("embed.js").replace("/*__NURTURE_FORM__*/null", literal)
    return Response(
        script, media_type="application/javascript; charset=utf-8",
        headers={"cache-control": "public, max-age=300"},
    )


@router.get("/{form_key}/thanks", response_class=HTMLResponse, include_in_schema=False)
async def thanks(form_key: str) -> HTMLResponse:
    """The built-in thank-you page for forms without a success_url."""
    return _page(
        "Спасибо! / Thank you!",
        "<p lang='ru'>Мы получили вашу заявку и скоро свяжемся с вами.</p>"
        "<p lang='en'>We have received your request and will be in touch soon.</p>",
        200,
    )


# --- helpers ---------------------------------------------------------------------------------


async def parse_form_body(media: str, request: Request, body: bytes) -> dict[str, Any]:
    """The posted values by name; for repeated names the last one wins (hidden+checkbox idiom)."""
    if media == "application/json":
        return parse_json_object(body)
    if media == "multipart/form-data":
        async def stream() -> Any:
            yield body

        try:
            parsed = await MultiPartParser(request.headers, stream(), max_files=20, max_fields=1000).parse()
        except (MultiPartException, ValueError, KeyError, UnicodeDecodeError):
            raise Invalid("the multipart body cannot be read", field="body") from None
        values: dict[str, Any] = {}
        for name, value in parsed.multi_items():
            if isinstance(value, UploadFile):
                await value.close()  # forms here take no files
            else:
                values[name] = value
        return values
    return parse_urlencoded(body)


def _own_origins(request: Request, settings: Settings) -> set[str]:
    return {o for o in (normalize_origin(settings.base_url), normalize_origin(str(request.base_url))) if o}


def _origin_allowed(form: Form, origin: str, request: Request, settings: Settings) -> bool:
    if not form.allowed_origins:
        return True
    normalized = normalize_origin(origin)
    return normalized is not None and (
        normalized in form.allowed_origins or normalized in _own_origins(request, settings)
    )


def _cors_headers(form: Form, request: Request, settings: Settings) -> dict[str, str]:
    """Refuse posts from origins the form does not list; CORS headers for the ones it does."""
    origin = request.headers.get("origin")
    claimed = origin or request.headers.get("referer")
    if claimed and not _origin_allowed(form, claimed, request, settings):
        raise Forbidden("this site may not post to the form", field="origin")
    if origin and normalize_origin(origin):
        return {"access-control-allow-origin": origin, "vary": "Origin"}
    return {}


def _success(form: Form, wants_json: bool, lead_id: str, cors: dict[str, str]) -> Response:
    if wants_json:
        return JSONResponse({"lead_id": lead_id}, status_code=201, headers=cors)
    return RedirectResponse(form.success_url or f"/v1/forms/{form.key}/thanks", status_code=303)


def _failure(
    exc: NurtureError, form: Form | None, form_key: str, wants_json: bool, cors: dict[str, str]
) -> Response:
    headers = {**cors, **(retry_after(exc) if isinstance(exc, RateLimited) else {})}
    if wants_json:
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
    if isinstance(exc, Invalid) and form is not None and form.error_url:
        return RedirectResponse(
            _with_query(form.error_url, nurture_error=exc.field or "form", nurture_form=form_key),
            status_code=303,
        )
    label = exc.field or ""
    for spec in (form.fields if form is not None else None) or []:
        if spec.get("name") == exc.field:
            label = spec.get("label") or label
    where = f"<p><b>{html.escape(label)}</b>: " if label else "<p>"
    return _page(
        "Проверьте форму / Please check the form",
        f"{where}{html.escape(exc.message)}</p>"
        "<p><a href='javascript:history.back()'>← Вернуться к форме / Back to the form</a></p>",
        exc.status, headers,
    )


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))


def _page(title: str, body: str, status: int, headers: dict[str, str] | None = None) -> HTMLResponse:
    document = (
        "<!doctype html><html lang='ru'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;"
        "max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=headers)


@lru_cache
def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")
