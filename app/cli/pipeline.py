"""`nurture status | events failed | events retry`: the event pipeline's state and its dead letters."""

from __future__ import annotations

from typing import Any

import typer

from app.cli.kit import database, run_async
from core.settings import get_settings

events_cli = typer.Typer(help="The event pipeline's dead letters.", no_args_is_help=True)


def status(as_json: bool = typer.Option(False, "--json", help="One JSON object")) -> None:
    """The event pipeline: queue depth, lag, dead letters, workers alive."""
    import json

    from core.redis import redis_url_for
    from worker.main import queue_pool
    from worker.status import pipeline_status

    settings = get_settings()

    async def body(url: str) -> dict[str, Any]:
        db = database()
        queue = await queue_pool(url)
        try:
            return await pipeline_status(db, queue)
        finally:
            await queue.aclose()
            await db.dispose()

    with redis_url_for(settings) as url:
        report = run_async(body(url))
    if as_json:
        typer.echo(json.dumps(report))
        return
    workers = report.pop("workers")
    for key, value in report.items():
        typer.echo(f"{key.replace('_', ' '):<20} {'unknown' if value is None else value}")
    typer.echo(f"{'workers alive':<20} {'unknown' if workers is None else len(workers)}")
    for beat in workers or []:
        typer.echo(f"  {beat['id']}  running {beat['running']}  done {beat['complete']}  failed {beat['failed']}")


@events_cli.command("failed")
def events_failed(limit: int = typer.Option(100, help="At most this many")) -> None:
    """List dead letters: handlers that failed on every try (one JSON line each)."""
    import json

    from worker.status import failed_events, failed_out

    async def body() -> list[dict[str, Any]]:
        db = database()
        try:
            async with db.sessions() as session:
                return [failed_out(f) for f in await failed_events(session, limit)]
        finally:
            await db.dispose()

    for row in run_async(body()):
        typer.echo(json.dumps(row, ensure_ascii=False))


@events_cli.command("retry")
def events_retry(
    ids: list[str] = typer.Argument(None, help="Dead-letter ids (from `nurture events failed`)"),
    all_: bool = typer.Option(False, "--all", help="Retry every open dead letter"),
) -> None:
    """Give dead letters another round of tries (the worker picks them up)."""
    from core.ids import parse_id
    from worker.status import retry_failed

    if bool(ids) == all_:
        typer.echo("error: give dead-letter ids or --all", err=True)
        raise typer.Exit(2)

    async def body() -> int:
        wanted = None if all_ else [parse_id(i, "id") for i in ids]
        db = database()
        try:
            async with db.sessions() as session:
                queued = await retry_failed(session, wanted)
                await session.commit()
                return queued
        finally:
            await db.dispose()

    typer.echo(f"{run_async(body())} dead letters queued for another try")
