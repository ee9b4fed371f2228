"""The references for bench/intake.py.

`create_bare_app`: the same form post read and validated by nurture's own parsing code (content
type, body limit, field rules, phone/email normalisation, utm capture), then answered without
touching a database.

`create_floor_app`: the same, then the post kept in the least a durable intake can do: one row in
PostgreSQL (its id, email and values), the posts that arrive meanwhile committed together (one
round trip), each answered once its row is committed. No nurture code past the parsing: what this
endpoint cannot reach on a machine, durable intake cannot reach there either.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.main import NO_TELEMETRY, settle_gc
from core.ids import new_id
from core.web import read_body
from leads.intake.forms import FormIn, apply_definition
from leads.intake.submissions import clean_values, visit_from
from leads.models import Form
from leads.public.forms import parse_form_body


def create_bare_app(keep: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> FastAPI:
    from intake import BENCH_FORM

    form = Form()
    apply_definition(form, FormIn.model_validate(BENCH_FORM))
    app = FastAPI(telemetry=NO_TELEMETRY)  # as nurture's app, so only the work differs

    @app.post("/v1/forms/{form_key}/submit")
    async def submit(form_key: str, request: Request) -> JSONResponse:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await read_body(request, 1024 * 1024)
        values = await parse_form_body(media, request, body)
        visit_from(values, request.headers.get("referer"), request.cookies.get("nurture_vid"), "127.0.0.1")
        cleaned = clean_values(form, values, {}, "RU")
        lead_id = new_id()
        if keep is not None:
            await keep({"id": str(lead_id), "email": cleaned.profile.get("email"), "body": values})
        return JSONResponse({"lead_id": str(lead_id)}, status_code=201)

    settle_gc()  # the same process settings as nurture's app, so only the work differs
    return app


FLOOR_TABLE = "CREATE TABLE IF NOT EXISTS floor_posts (id uuid PRIMARY KEY, email text UNIQUE, body jsonb NOT NULL)"
FLOOR_INSERT = ("INSERT INTO floor_posts SELECT id, email, body FROM json_populate_recordset(NULL::floor_posts, "
                "$1::json) ON CONFLICT (email) DO NOTHING")
FLOOR_BATCH = 100
FLOOR_WRITERS = 2  # as nurture's form batcher: one group is written while the next gathers


class Floor:
    """Grouped commits of one row per post, straight on asyncpg."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: asyncio.Task[Any] | None = None  # made by the first writer, awaited by every one
        self.queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self.active = 0
        self.writing: set[asyncio.Task[None]] = set()

    async def keep(self, row: dict[str, Any]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append((row, done))
        if self.active < FLOOR_WRITERS:
            self.active += 1
            writer = asyncio.get_running_loop().create_task(self._write())
            self.writing.add(writer)
            writer.add_done_callback(self.writing.discard)
        await done

    async def _write(self) -> None:
        try:
            if self.pool is None:
                self.pool = asyncio.get_running_loop().create_task(self._connect())
            pool = await self.pool
            while self.queue:
                batch, self.queue = self.queue[:FLOOR_BATCH], self.queue[FLOOR_BATCH:]
                try:
                    await pool.execute(FLOOR_INSERT, orjson.dumps([row for row, _ in batch]).decode())
                except Exception as exc:  # noqa: BLE001 - each waiting post answers with it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self.active -= 1

    async def _connect(self) -> Any:
        import asyncpg

        pool = await asyncpg.create_pool(self.url, min_size=FLOOR_WRITERS, max_size=FLOOR_WRITERS)
        await pool.execute(FLOOR_TABLE)
        return pool


def create_floor_app() -> FastAPI:
    from _harness import pg_dsn

    return create_bare_app(Floor(pg_dsn(os.environ["NURTURE_DATABASE_URL"])).keep)
