"""The `nurture` command line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from core.db import Database
from core.errors import NurtureError
from core.settings import get_settings

cli = typer.Typer(help="nurture: lead intake, scoring, campaigns and attribution.", no_args_is_help=True)
user_cli = typer.Typer(help="Users of the web UI and API.", no_args_is_help=True)
key_cli = typer.Typer(help="API keys.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
cli.add_typer(key_cli, name="apikey")

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command body; a NurtureError becomes a readable message and exit code 2."""
    try:
        return asyncio.run(coro)
    except NurtureError as exc:
        where = f" ({exc.field})" if exc.field else ""
        typer.echo(f"error{where}: {exc.message}", err=True)
        raise typer.Exit(2) from None


def database() -> Database:
    settings = get_settings()
    return Database(settings.resolved_database_url(), settings.db_pool_size)


async def _migrate() -> None:
    from migrations import upgrade

    db = database()
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    run_async(_migrate())
    typer.echo("database is up to date")


@cli.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default NURTURE_HOST)"),
    port: int = typer.Option(None, help="Port (default NURTURE_PORT)"),
    workers: int = typer.Option(1, help="Processes"),
) -> None:
    """Start the HTTP API."""
    import uvicorn

    from core import logging as logs

    settings = get_settings()
    logs.configure(settings.log_level, settings.log_json)
    uvicorn.run(
        "app.main:create_app", factory=True, host=host or settings.host, port=port or settings.port,
        workers=workers, log_level="warning", proxy_headers=False,
    )


@cli.command()
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


@cli.command("demo")
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


@user_cli.command("add")
def user_add(
    email: str,
    role: str = typer.Option("marketer", help="admin, marketer or sales"),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    name: str = typer.Option("", help="Display name"),
) -> None:
    """Add a user."""
    from core.auth import add_user

    async def body() -> None:
        db = database()
        try:
            async with db.sessions() as session:
                user = await add_user(session, email, password, role, name)
                await session.commit()
                typer.echo(f"user {user.email} ({user.role}) added")
        finally:
            await db.dispose()

    run_async(body())


@key_cli.command("create")
def apikey_create(
    name: str,
    scope: list[str] = typer.Option(["leads:read", "leads:write"], help="Repeat for several scopes"),
) -> None:
    """Create an API key; the secret is printed once."""
    from core.auth import create_api_key

    async def body() -> None:
        db = database()
        try:
            async with db.sessions() as session:
                _key, raw = await create_api_key(session, name, scope)
                await session.commit()
                typer.echo(raw)
        finally:
            await db.dispose()

    run_async(body())


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
