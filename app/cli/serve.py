"""`nurture migrate | serve | worker | smtpd | run | demo`: the schema, and the processes that serve
nurture (the API, the worker, inbound SMTP, or all of them at once on the embedded defaults)."""

from __future__ import annotations

import contextlib
import os

import typer

from app.cli.kit import database, run_async
from core.settings import get_settings


async def _migrate() -> None:
    from migrations import upgrade

    db = database()
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()


def migrate() -> None:
    """Bring the database schema up to date."""
    run_async(_migrate())
    typer.echo("database is up to date")


def serve(
    host: str = typer.Option(None, help="Bind address (default NURTURE_HOST)"),
    port: int = typer.Option(None, help="Port (default NURTURE_PORT)"),
    workers: int = typer.Option(1, help="Processes"),
) -> None:
    """Start the HTTP API."""
    import uvicorn

    from core import logging as logs
    from core.redis import redis_url_for

    settings = get_settings()
    logs.configure(settings.log_level, settings.log_json)
    with redis_url_for(settings) as url:
        os.environ["NURTURE_REDIS_URL"] = url  # read by every API process the factory makes
        get_settings.cache_clear()
        uvicorn.run(
            "app.main:create_app", factory=True, host=host or settings.host, port=port or settings.port,
            workers=workers, log_level="warning", proxy_headers=False,
        )


def worker() -> None:
    """Run event handlers, the outbox relay and the sweeper (Ctrl-C finishes the jobs in hand)."""
    from core import logging as logs
    from core.redis import redis_url_for
    from worker.main import run_worker

    settings = get_settings()
    logs.configure(settings.log_level, settings.log_json)
    with redis_url_for(settings) as url:
        typer.echo(f"worker started (queue {url})", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            run_async(run_worker(settings, url))


def smtpd(
    host: str = typer.Option(None, help="Bind address (default NURTURE_SMTPD_HOST)"),
    port: int = typer.Option(None, help="Port (default NURTURE_SMTPD_PORT)"),
) -> None:
    """Receive mail by SMTP: inquiries become leads; bounces, complaints and auto-replies are recorded."""
    from core import logging as logs
    from leads.smtpd import serve as serve_smtp

    settings = get_settings()
    logs.configure(settings.log_level, settings.log_json)
    typer.echo(f"smtpd listening on {host or settings.smtpd_host}:{port or settings.smtpd_port} (Ctrl-C stops)")
    try:
        run_async(serve_smtp(settings, host, port))
    except KeyboardInterrupt:
        typer.echo("smtpd stopped")


def run(
    host: str = typer.Option(None, help="Bind address (default NURTURE_HOST)"),
    port: int = typer.Option(None, help="API port (default NURTURE_PORT)"),
    demo: bool = typer.Option(True, help="Seed a demo when the database is empty"),
) -> None:
    """Everything on the embedded defaults: migrate, seed a demo, start the API and inbound SMTP."""
    from app.runner import run_all

    settings = get_settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    run_async(run_all(settings, with_demo=demo))


def demo_command() -> None:
    """Seed the demo (form, tracking number, landing page, leads) if the database is empty."""
    from app.runner import seed

    async def body() -> None:
        await _migrate()
        db = database()
        try:
            message = await seed(db)
        finally:
            await db.dispose()
        typer.echo(message)

    run_async(body())
