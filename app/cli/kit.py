"""What every command body runs on: the database the settings name, and `run_async`, which turns a
NurtureError into a readable message and exit code 2."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from core.db import Database
from core.errors import NurtureError
from core.settings import get_settings

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
