"""What every router shares: the session and settings dependencies, API-key auth, the client IP,
request bodies read within limits and parsed, and the lean route of the public endpoints."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Receive, Scope, Send

from core import clock
from core.auth import ApiKey, require, resolve_api_key
from core.auth import Scope as KeyScope  # starlette's Scope is the ASGI one
from core.db import Database
from core.errors import Invalid, NurtureError, TooLarge, Unauthorized
from core.settings import Settings


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def get_settings_dep(request: Request) -> Settings:  # async: a plain def would run in a thread
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with get_db(request).sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def require_scope(*scopes: str) -> Callable[..., Coroutine[Any, Any, ApiKey]]:
    """Dependency: a valid API key (Authorization: Bearer … or X-API-Key) holding one of `scopes`."""

    async def dependency(request: Request) -> ApiKey:
        raw = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if not raw and auth.lower().startswith("bearer "):
            raw = auth[7:].strip()
        if not raw:
            raise Unauthorized("an API key is required (Authorization: Bearer <key>)", field="authorization")
        async with get_db(request).sessions() as session:
            key = await resolve_api_key(session, raw)
            require(key, *scopes)
            # Record use at most hourly: a write per request would serialise reads on SQLite.
            now = clock.now()
            if key.last_used_at is None or now - key.last_used_at > timedelta(hours=1):
                key.last_used_at = now
                await session.commit()
        request.state.api_key = key
        return key

    return dependency


# Who may call a route, by the scope their key holds: the same names in every domain's routers.
LeadsReader = Annotated[ApiKey, Depends(require_scope(KeyScope.leads_read))]
LeadsWriter = Annotated[ApiKey, Depends(require_scope(KeyScope.leads_write))]
Marketer = Annotated[ApiKey, Depends(require_scope(KeyScope.forms))]  # sets up forms, mail, rules
Importer = Annotated[ApiKey, Depends(require_scope(KeyScope.imports))]
Admin = Annotated[ApiKey, Depends(require_scope(KeyScope.admin))]
# reads what marketers set up and sent: sales and reports (leads:read) or marketers (forms:write)
SetupReader = Annotated[ApiKey, Depends(require_scope(KeyScope.leads_read, KeyScope.forms))]


class LeanRoute(APIRoute):
    """A route for the public endpoints websites call many times a second. It is documented like any
    other (OpenAPI is read from the endpoint's signature) but called straight with the request and
    its path parameters: no dependencies to solve, no response model, no exit stacks per request,
    about a tenth of a form post's CPU. Its endpoint takes only `request` and path parameters (as
    str), returns a Response, and a NurtureError it raises is answered with its JSON error, as the
    app's handler would; anything else escaping it becomes `app.main.RequestContext`'s JSON 500.

    The saving needs the route among the app's own routes (`app.router.routes`, as `leads.api` puts
    the public ones): a router included with `include_router` wraps the same handler in FastAPI's
    per-request machinery again.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        own = self.dependant
        if own.dependencies or own.query_params or own.header_params or own.cookie_params or own.body_params:
            raise TypeError(f"{endpoint.__name__}: a LeanRoute endpoint takes only the request and path parameters")
        if any(param.field_info.annotation is not str for param in own.path_params):
            raise TypeError(f"{endpoint.__name__}: a LeanRoute endpoint takes its path parameters as str")
        handler = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint, request_name = self.endpoint, self.dependant.request_param_name

        async def handler(request: Request) -> Response:
            params = request.path_params
            try:
                response: Response = await endpoint(**({**params, request_name: request} if request_name else params))
            except NurtureError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status)
            return response

        return handler


def client_ip(request: Request, settings: Settings) -> str:
    """The caller's address. X-Forwarded-For is believed only from configured proxies, and read
    from the right: the first address that is not one of our proxies is the client (anything
    further left was written by the client and can be forged)."""
    peer = request.client.host if request.client else ""
    if not settings.trusted_proxies:
        return peer
    proxies = settings.trusted_proxy_set()
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded or peer not in proxies:
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in proxies:
            return hop[:64]
    return peer


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body is over {limit} bytes", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body is over {limit} bytes", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a request body, or Invalid naming the body."""
    import json

    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise Invalid("the body is not valid JSON", field="body") from None
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object", field="body")
    return data


MAX_FORM_FIELDS = 1000
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")  # a run of %XX escapes


def parse_urlencoded(body: bytes) -> dict[str, str]:
    """The fields of an application/x-www-form-urlencoded body by name (for a repeated name the last
    one wins), read as `urllib.parse.parse_qsl` reads them with blank values kept and strict
    decoding: UTF-8, or windows-1251, which old Russian sites still post; else Invalid naming the
    body. It decodes each run of %XX escapes in one call rather than escape by escape: 12 instead of
    22 µs for a typical form (bench/intake.py's)."""
    for encoding in ("utf-8", "cp1251"):
        try:
            text = body.decode(encoding)
            if text.count("&") >= MAX_FORM_FIELDS:
                raise Invalid("too many fields", field="body")
            return dict(_field(pair, encoding) for pair in text.split("&") if pair)
        except UnicodeDecodeError:
            continue
    raise Invalid("the body is not valid UTF-8 or windows-1251 text", field="body")


def _field(pair: str, encoding: str) -> tuple[str, str]:
    name, _, value = pair.partition("=")
    return _unescape(name, encoding), _unescape(value, encoding)


def _unescape(text: str, encoding: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    return _ESCAPES.sub(lambda run: bytes.fromhex(run[0].replace("%", "")).decode(encoding), text)
