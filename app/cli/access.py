"""`nurture user add | apikey create`: who may use the web UI and the API."""

from __future__ import annotations

import typer

from app.cli.kit import database, run_async

user_cli = typer.Typer(help="Users of the web UI and API.", no_args_is_help=True)
key_cli = typer.Typer(help="API keys.", no_args_is_help=True)


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
