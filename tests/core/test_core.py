from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from sqlalchemy import text

from core import clock
from core.auth import add_user, authenticate_user
from core.db import Base, Database
from core.errors import Forbidden, Invalid, NotFound, Unauthorized
from core.tokens import Signer
from core.web import LeanRoute


async def test_health_ready_and_metrics_answer(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    await client.get("/v1/leads/nope")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "nurture_http_requests_total" in metrics.text


async def test_every_response_carries_a_request_id_and_keeps_a_given_one(client: httpx.AsyncClient) -> None:
    assert len((await client.get("/healthz")).headers["x-request-id"]) >= 16
    given = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    resp = await client.get("/no/such/page")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


async def test_malformed_json_is_422_not_500(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    resp = await client.post(
        "/v1/leads", content=b"{not json", headers={**admin_headers, "content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid"


def test_tokens_signed_with_an_old_key_still_verify_after_rotation() -> None:
    old = Signer(["key-1"]).sign({"lead": "x"})
    rotated = Signer(["key-2", "key-1"])
    assert rotated.unsign(old) == {"lead": "x"}
    fresh = rotated.sign({"lead": "y"})
    assert Signer(["key-2"]).unsign(fresh) == {"lead": "y"}
    with pytest.raises(Forbidden):
        Signer(["key-1"]).unsign(fresh)
    # A character well inside the signature (the last one carries ignored padding bits).
    tampered = old[:-5] + ("A" if old[-5] != "A" else "B") + old[-4:]
    with pytest.raises(Forbidden):
        rotated.unsign(tampered)


def test_signed_token_expires_by_max_age() -> None:
    signer = Signer(["k"])
    token = signer.sign("v")
    assert signer.unsign(token, max_age=60) == "v"


def test_clock_freezes_and_advances() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with clock.frozen(at):
        assert clock.now() == at
        clock.advance(timedelta(minutes=5))
        assert clock.now() == at + timedelta(minutes=5)
    assert clock.now() > at


async def test_users_have_hashed_passwords_and_roles(db: Database) -> None:
    async with db.sessions() as session:
        user = await add_user(session, "Marina@Example.com", "correct horse", "marketer", "Марина")
        await session.commit()
        assert "correct horse" not in user.password_hash
        assert (await authenticate_user(session, "marina@example.com", "correct horse")).id == user.id
        with pytest.raises(Unauthorized):
            await authenticate_user(session, "marina@example.com", "wrong")
        with pytest.raises(Invalid) as bad_role:
            await add_user(session, "x@example.com", "long enough", "boss")
        assert bad_role.value.field == "role"


async def test_api_keys_are_created_once_listed_without_secret_and_revoked(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await client.post("/v1/api-keys", json={"name": "site", "scopes": ["leads:read"]}, headers=admin_headers)
    assert created.status_code == 201
    secret = created.json()["key"]
    listed = await client.get("/v1/api-keys", headers=admin_headers)
    assert secret not in listed.text
    use = {"authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/leads/00000000-0000-0000-0000-000000000000", headers=use)).status_code == 404
    revoked = await client.delete(f"/v1/api-keys/{created.json()['id']}", headers=admin_headers)
    assert revoked.status_code == 204
    after = await client.get("/v1/leads/00000000-0000-0000-0000-000000000000", headers=use)
    assert after.status_code == 401


async def test_api_key_with_unknown_scope_is_refused_naming_scopes(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    resp = await client.post("/v1/api-keys", json={"name": "x", "scopes": ["everything"]}, headers=admin_headers)
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "scopes"


async def test_api_key_named_with_a_nul_character_is_refused_naming_name_and_not_created(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    resp = await client.post("/v1/api-keys", json={"name": "site\x00", "scopes": ["leads:read"]}, headers=admin_headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "name"
    assert len((await client.get("/v1/api-keys", headers=admin_headers)).json()) == 1  # the admin's own key


async def test_migrations_create_exactly_the_models(db: Database) -> None:
    def diff(connection):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        return compare_metadata(context, Base.metadata)

    async with db.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models and migrations differ; run `make migration m=...`: {changes}"


async def test_partial_indexes_are_partial_in_the_migrated_database(db: Database) -> None:
    """Autogenerate does not compare an index's WHERE: the migrated indexes are held to the models here."""
    partial = {
        index.name: index for table in Base.metadata.tables.values() for index in table.indexes
        if index.dialect_options["postgresql"]["where"] is not None
    }
    assert {"ix_touchpoints_visitor_id", "ix_outbox_events_unrelayed", "ix_outbox_events_undone"} <= set(partial)
    async with db.engine.connect() as conn:
        if db.sqlite:
            rows = await conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
        else:
            rows = await conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
        where = {name: " WHERE " in (sql or "") for name, sql in rows}
    assert {name: where.get(name) for name in partial} == dict.fromkeys(partial, True)
    assert not any(where[name] for name in where if name not in partial)


def test_postgres_urls_as_tools_write_them_use_the_async_driver() -> None:
    from core.db import async_url

    assert async_url("postgresql://u@h/db").startswith("postgresql+asyncpg://")
    assert async_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"


def test_forwarded_for_is_read_from_the_right_and_only_behind_a_trusted_proxy() -> None:
    from starlette.requests import Request

    from core.settings import Settings
    from core.web import client_ip

    def request(peer: str, forwarded: str) -> Request:
        headers = [(b"x-forwarded-for", forwarded.encode())]
        return Request({"type": "http", "headers": headers, "client": (peer, 1234)})

    behind = Settings(trusted_proxies="10.0.0.1,10.0.0.2", secret_keys="k")
    # The client wrote "1.1.1.1" itself; the proxy appended the real address.
    assert client_ip(request("10.0.0.1", "1.1.1.1, 198.51.100.9"), behind) == "198.51.100.9"
    assert client_ip(request("10.0.0.1", "198.51.100.9, 10.0.0.2"), behind) == "198.51.100.9"
    # Not from a trusted proxy: the header is ignored.
    assert client_ip(request("203.0.113.5", "1.1.1.1"), behind) == "203.0.113.5"


def test_ids_made_in_a_burst_sort_in_order_and_keep_the_real_time() -> None:
    import time

    from core.ids import new_id

    before = time.time()
    ids = [new_id() for _ in range(50_000)]  # an import's worth, in well under a second
    after = time.time()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.version == 7 for i in ids[:10])
    # the 48-bit millisecond timestamp stays the clock's (a bumping generator runs ahead)
    assert before - 0.002 <= (ids[-1].int >> 80) / 1000 <= after + 0.002


async def test_requests_after_postgresql_dropped_the_pooled_connections_still_succeed(
    db: Database, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """As after a database restart: every idle connection in the pool was closed by the server."""
    if db.sqlite:
        pytest.skip("PostgreSQL only: server-side connection kills")
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    idle: list[Any] = []  # the driver's connections, back in the pool afterwards

    async def hold(seconds_of_work: int) -> None:
        async with db.sessions() as session:
            await session.execute(text("SELECT pg_sleep(0.01 * :n)"), {"n": seconds_of_work})
            idle.append((await (await session.connection()).get_raw_connection()).driver_connection)

    await asyncio.gather(*(hold(1) for _ in range(4)))  # four connections now sit idle in the pool
    dsn = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert killed >= 4
        while await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ):
            pass
    finally:
        await admin.close()
    # A restart takes a moment: by the next request this process has read each socket's close.
    # (A backend leaves pg_stat_activity just before its socket closes.)
    for _ in range(1000):
        if all(conn.is_closed() for conn in idle):
            break
        await asyncio.sleep(0.01)

    answers = await asyncio.gather(*(client.get("/v1/leads", headers=admin_headers) for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4


async def test_a_lean_route_is_called_with_its_path_and_answers_nurture_errors_as_json() -> None:
    router = APIRouter(route_class=LeanRoute)

    @router.post("/things/{key}/poke", status_code=201, response_model=None)
    async def poke(key: str, request: Request) -> Response:
        if key == "gone":
            raise NotFound("no such thing", field="key")
        return Response(f"{key} {await request.body()!r}", status_code=201)

    app = FastAPI()
    app.router.routes.extend(router.routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        ok = await client.post("/things/abc/poke", content=b"hi")
        assert (ok.status_code, ok.text) == (201, "abc b'hi'")
        gone = await client.post("/things/gone/poke")
        assert gone.status_code == 404
        assert gone.json()["error"] == {"code": "not_found", "message": "no such thing", "field": "key"}
        assert (await client.get("/things/abc/poke")).status_code == 405
    assert "/things/{key}/poke" in app.openapi()["paths"]  # documented like any other route


def test_a_lean_route_refuses_an_endpoint_it_would_not_call_as_written() -> None:
    router = APIRouter(route_class=LeanRoute)
    with pytest.raises(TypeError, match="only the request and path parameters"):
        @router.get("/search")
        async def search(q: str) -> Response:
            return Response(q)
    with pytest.raises(TypeError, match="only the request and path parameters"):
        @router.get("/me")
        async def me(request: Request, user: str = Depends(lambda: "someone")) -> Response:
            return Response(user)
    with pytest.raises(TypeError, match="as str"):
        @router.get("/page/{number}")
        async def page(number: int) -> Response:
            return Response(str(number))
