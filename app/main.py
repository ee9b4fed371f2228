"""Application factory: routers, error mapping, request ids, metrics, health."""

from __future__ import annotations

import contextlib
import gc
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logging as logs
from core.db import Database
from core.errors import NurtureError
from core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from core.settings import Settings, get_settings
from core.turns import Turns

# nurture reports through its own Prometheus metrics and JSON logs; FastAPI's OpenTelemetry hooks
# would otherwise look up the (unconfigured) providers on every request
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

log = logs.get_logger("nurture.http")
CLIENT_GONE = 499  # the status nginx logs for a client that closed the connection; never sent


def settle_gc() -> None:
    """Once the app has started: move what start-up made (modules, the ORM's mappers, settings)
    out of the collector's way and collect the young generation less often. A request makes
    thousands of short-lived objects; with the default threshold the collector ran every few
    requests and its full passes walked every start-up object, which showed as 100+ ms stalls
    in the p99 of form intake."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    owns_db = db is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.db is None:
            app.state.db = Database(settings.resolved_database_url(), settings.db_pool_size)
        if settings.redis_url and getattr(app.state, "queue", None) is None:
            from core.outbox import RedisNudge, set_nudge
            from worker.main import queue_pool

            app.state.queue = await queue_pool(settings.redis_url)
            set_nudge(RedisNudge(app.state.queue))  # the relay hears of each commit at once
        settle_gc()
        yield
        for name in ("form_batcher", "event_writer", "live_forms"):  # work under way ends before the pool closes
            if (pending := getattr(app.state, name, None)) is not None:
                await pending.close()
        if (queue := getattr(app.state, "queue", None)) is not None:
            from core.outbox import set_nudge

            set_nudge(None)
            await queue.aclose()
            app.state.queue = None
        if owns_db:
            await app.state.db.dispose()

    app = FastAPI(
        title="nurture",
        version="0.1.0",
        description="Lead intake, scoring, campaigns, sales handoff and attribution.",
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.db = db
    _install_errors(app)
    _install_middleware(app)
    _install_routes(app)
    return app


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(NurtureError)
    async def nurture_error(_request: Request, exc: NurtureError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):  # where it was, not what
            loc = loc[1:]
        body = {
            "error": {
                "code": "invalid",
                "message": str(first.get("msg", "invalid request")),
                "field": ".".join(loc) or None,
                "details": [
                    {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg")}
                    for e in errors
                ],
            }
        }
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail), "field": None}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


def _install_middleware(app: FastAPI) -> None:
    app.add_middleware(RequestContext)


class RequestContext:
    """Request id (kept from X-Request-Id or made), bound to every log line; metrics per route;
    an unexpected error becomes a JSON 500; requests of a burst take turns on the event loop
    (core.turns). Plain ASGI: no per-request task or body copy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.turns = Turns()
        self.counted: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def count(self, method: str, template: str, status: int, seconds: float) -> None:
        """One request in the route's metrics (their labelled children kept: looking one up costs
        more than counting)."""
        key = (method, template, status)
        if (children := self.counted.get(key)) is None:
            children = self.counted[key] = (
                HTTP_REQUESTS.labels(method, template, str(status)), HTTP_LATENCY.labels(method, template)
            )
        children[0].inc()
        children[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = given.decode("latin-1")[:64] or secrets.token_hex(16)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        await self.turns.wait()  # counted in the request's latency
        status = 500
        sent_start = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent_start
            if message["type"] == "http.response.start":
                status = message["status"]
                sent_start = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client hung up before its request had arrived (a closed tab, a dropped mobile
            # connection): nothing was written and no one is left to answer.
            status = CLIENT_GONE
            log.info("client went away mid-request", path=scope.get("path"))
        except Exception:
            log.exception("unhandled error", path=scope.get("path"))
            if sent_start:
                raise
            status = 500
            body = JSONResponse(
                {"error": {"code": "internal", "message": "internal error", "field": None}},
                status_code=500, headers={"x-request-id": request_id},
            )
            await body(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            self.count(method, template, status, time.perf_counter() - started)
            if status >= 500:
                log.error("request failed", method=method, path=template, status=status)


def _install_routes(app: FastAPI) -> None:
    from app.domains import install
    from app.routes import include_routers

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            await request.app.state.db.ping()
            checks["database"] = "ok"
        except Exception as exc:  # readiness reports, never raises
            checks["database"] = f"error: {type(exc).__name__}"
        if (queue := getattr(request.app.state, "queue", None)) is not None:
            try:
                await queue.ping()
                checks["redis"] = "ok"
            except Exception as exc:
                checks["redis"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> PlainTextResponse:
        from worker.status import export_metrics, pipeline_status

        with contextlib.suppress(Exception):  # the rest of the metrics are still worth a scrape
            export_metrics(await pipeline_status(request.app.state.db, getattr(request.app.state, "queue", None)))
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    include_routers(app, install())
