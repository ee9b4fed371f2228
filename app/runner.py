"""`nurture run`: one process, one Ctrl-C — migrations, demo seed, embedded Redis, the API, the worker
and inbound SMTP."""

from __future__ import annotations

import asyncio
import contextlib

import typer
import uvicorn

from core import logging as logs
from core.auth import Scope, create_api_key
from core.db import Database
from core.redis import redis_url_for
from core.settings import Settings
from migrations import upgrade


async def seed(db: Database) -> str:
    """Seed the demo when the database is empty; the admin key is printed once, never stored."""
    from app.demo import seed_demo

    async with db.sessions() as session:
        if not await seed_demo(session):
            return "database already has data: demo not seeded"
        _key, raw = await create_api_key(session, "demo admin", [Scope.admin.value])
        await session.commit()
    return f"demo seeded; admin API key (shown once): {raw}"


async def run_all(settings: Settings, with_demo: bool = True) -> None:
    with redis_url_for(settings) as redis_url:
        await _run_all(settings.model_copy(update={"redis_url": redis_url}), with_demo)


async def _run_all(settings: Settings, with_demo: bool) -> None:
    logs.configure(settings.log_level, json=False)
    db = Database(settings.resolved_database_url(), settings.db_pool_size)
    await upgrade(db.engine)
    seeded = await seed(db) if with_demo else ""

    from app.main import create_app
    from leads.smtpd import start_smtpd
    from worker.main import build_worker, finish_jobs

    smtpd = await start_smtpd(db, settings)
    worker = build_worker(settings, db, settings.redis_url, handle_signals=False)
    worker_task = asyncio.create_task(worker.async_run())
    # As `nurture serve`: X-Forwarded-For is read by nurture itself, from NURTURE_TRUSTED_PROXIES only.
    config = uvicorn.Config(create_app(settings, db), host=settings.host, port=settings.port, log_level="warning",
                            proxy_headers=False)
    server = uvicorn.Server(config)
    base = f"http://{settings.host}:{settings.port}"
    banner = [
        "",
        "nurture is running",
        f"  API            {base}   (docs: {base}/docs)",
        f"  demo landing   {base}/demo/landing",
        f"  inbound SMTP   smtp://{settings.smtpd_host}:{settings.smtpd_port}",
        f"  job queue      {settings.redis_url}   (worker running here; `nurture status`)",
        f"  database       {settings.resolved_database_url()}",
    ]
    if seeded:
        banner.append(f"  {seeded}")
    banner.append("Press Ctrl-C to stop.")
    typer.echo("\n".join(banner))
    try:
        await server.serve()
    finally:
        await finish_jobs(worker, seconds=10)
        worker_task.cancel()
        with contextlib.suppress(BaseException):
            await worker_task
        with contextlib.suppress(Exception):
            await smtpd.stop()
        await db.dispose()
