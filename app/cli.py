"""The `nurture` command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
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
events_cli = typer.Typer(help="The event pipeline's dead letters.", no_args_is_help=True)
cli.add_typer(events_cli, name="events")
dkim_cli = typer.Typer(help="DKIM keys for signing outgoing mail.", no_args_is_help=True)
cli.add_typer(dkim_cli, name="dkim")

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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
def rescore(
    rules: Path = typer.Option(None, "--rules", help="A rule set (JSON) to roll out; default: the live one again"),
) -> None:
    """Score every lead afresh from its activity history, here and now (the live rules stay in
    force until all are done), then make the rules live. Intake and the workers carry on."""
    import json
    import time

    from pydantic import ValidationError
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from scoring.rules import RuleSetIn
    from scoring.rulesets import live_ruleset
    from scoring.service import post_ruleset, rescore_here

    try:
        spec = RuleSetIn.model_validate_json(rules.read_text("utf-8")) if rules is not None else None
    except OSError as exc:
        typer.echo(f"error: cannot read {rules}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        typer.echo(f"error ({field}): {rules}: {first['msg']}", err=True)
        raise typer.Exit(2) from None

    async def body() -> tuple[int, int]:
        db = database()
        try:
            async with db.sessions() as session:
                row = await post_ruleset(session, spec or (await live_ruleset(session)).spec, chain=False)
                version, total = row.version, row.leads_total
                await session.commit()
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(f"rescoring under rule set {version}", total=total)
                await rescore_here(db, version, progress=lambda done: bar.advance(task, done))
            return version, total
        finally:
            await db.dispose()

    started = time.perf_counter()
    version, total = run_async(body())
    typer.echo(json.dumps({"version": version, "leads": total, "seconds": round(time.perf_counter() - started, 2)}))


@cli.command("train-model")
def train_model() -> None:
    """Fit the predictive score on the leads whose outcome is known (won / lost), print its AUC on
    held-out leads next to the rules' AUC, and store it as a new version (one JSON object)."""
    import json

    from scoring.predict import train
    from scoring.rulesets import live_ruleset

    async def body() -> dict[str, Any]:
        db = database()
        try:
            async with db.sessions() as session:
                trained = await train(session, await live_ruleset(session))
                await session.commit()
                return trained.__dict__
        finally:
            await db.dispose()

    typer.echo(json.dumps(run_async(body())))


@cli.command("import-leads")
def import_leads(
    file: Path = typer.Argument(..., help="CSV file: UTF-8 or Windows-1251, separated by , ; or tab"),
    map_: list[str] = typer.Option([], "--map", help="column=field, column=custom.<key> or column=- (repeat)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check every row and report; write no lead"),
    region: str = typer.Option("", help="Phone region for numbers without +country (default NURTURE_DEFAULT_REGION)"),
    tag: list[str] = typer.Option([], "--tag", help="Tag every imported lead (repeat)"),
    source: str = typer.Option("", help="Touchpoint source (default: the file name)"),
    campaign: str = typer.Option("", help="Campaign for rows without a utm_campaign column"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace filled fields (default: fill empty ones only)"),
    encoding: str = typer.Option("", help="Force an encoding such as cp1251 (default: detected)"),
    errors_csv: Path = typer.Option(None, "--errors-csv", help="Write every failed row (line, field, message) here"),
) -> None:
    """Import leads from a CSV file. Exit 0: all rows imported; 1: some rows failed (the good ones
    are imported); 2: the file cannot be imported."""
    import csv
    import time

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    from sqlalchemy.exc import SQLAlchemyError

    from leads.intake.csvfile import parse_mapping
    from leads.intake.import_rows import ImportOptions, RowError
    from leads.intake.importer import import_file

    settings = get_settings()
    shown: list[RowError] = []
    writer: Any = None

    def on_error(error: RowError) -> None:
        if len(shown) < 20:
            shown.append(error)
        if writer is not None:
            writer.writerow([error.line, error.field or "", error.column or "", error.message])

    async def body() -> Any:
        nonlocal writer
        options = ImportOptions(
            mapping=parse_mapping(map_), dry_run=dry_run, region=region or None, tags=tag,
            source=source or None, campaign=campaign or None, overwrite=overwrite, encoding=encoding or None,
        )
        db = database()
        try:
            with contextlib.ExitStack() as stack:
                if errors_csv is not None:
                    # ';' and a BOM: what Excel in a Russian locale opens without an import dialog.
                    out = stack.enter_context(errors_csv.open("w", newline="", encoding="utf-8-sig"))
                    writer = csv.writer(out, delimiter=";")
                    writer.writerow(["line", "field", "column", "message"])
                bar = stack.enter_context(Progress(
                    TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True,
                ))
                task = bar.add_task(f"importing {file.name}", total=None)
                return await import_file(
                    db, file, options, settings.signing_keys(), settings.default_region,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    on_error=on_error,
                )
        except (OSError, SQLAlchemyError) as exc:
            raise NurtureError(f"{type(exc).__name__}: {exc}") from None
        finally:
            await db.dispose()

    started = time.perf_counter()
    run = run_async(body())
    seconds = time.perf_counter() - started
    if run.details.get("unknown_columns"):
        typer.echo(f"ignored columns (unknown): {', '.join(run.details['unknown_columns'])}", err=True)
    if dry_run:
        typer.echo("columns: " + ", ".join(f"{k} → {v}" for k, v in run.mapping.items()))
    for error in shown:
        where = f" {error.field}" + (f" ({error.column})" if error.column else "") if error.field else ""
        typer.echo(f"line {error.line}{where}: {error.message}", err=True)
    more = run.details.get("error_count", 0) - len(shown)
    if more > 0:
        typer.echo(f"… and {more} more errors" + ("" if errors_csv else " (all of them: --errors-csv PATH)"), err=True)
    verb = "checked (dry run, nothing written)" if dry_run else "imported"
    typer.echo(
        f"{verb} {file.name}: {run.total_rows} rows, {run.created} created, {run.updated} updated, "
        f"{run.skipped} skipped, {run.failed} failed in {seconds:.1f} s"
    )
    if run.status == "failed":
        typer.echo(f"error: {run.details.get('message', 'the import stopped')}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(1 if run.failed else 0)


@cli.command("bounce-classify")
def bounce_classify(
    files: list[str] = typer.Argument(..., metavar="FILE...", help="Raw messages (.eml): bounces, complaints, replies"),
) -> None:
    """Classify returned mail: one JSON line per recipient (file, recipient, status, reply_code, reason,
    hard). Exit 1 when a file cannot be read (the others are still classified)."""
    import json

    from channels.email.bounces import classify

    unreadable = False
    for name in files:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            typer.echo(f"error: cannot read {name}: {exc.strerror}", err=True)
            unreadable = True
            continue
        for r in classify(raw).recipients:
            typer.echo(json.dumps({
                "file": name, "recipient": r.recipient, "status": r.status, "reply_code": r.reply_code,
                "reason": r.reason, "hard": r.hard,
            }, ensure_ascii=False))
    if unreadable:
        raise typer.Exit(1)


@dkim_cli.command("new")
def dkim_new(
    domain: str = typer.Option(..., help="The signing domain (d=), usually the From address's domain"),
    selector: str = typer.Option(..., help="The key's name under _domainkey (s=), e.g. 2026a"),
    algorithm: str = typer.Option("rsa", help="rsa (2048-bit, every receiver) or ed25519 (RFC 8463)"),
    out: Path = typer.Option(None, help="Private key file (default <data dir>/dkim/<selector>.<domain>.<alg>.pem)"),
) -> None:
    """Make a DKIM key: write the private key (mode 0600, never over an existing file) and print the
    DNS TXT record to publish."""
    from channels.email.dkim import new_key, write_private_key

    try:
        key = new_key(algorithm, selector, domain)
        path = out or get_settings().data_dir / "dkim" / f"{key.selector}.{key.domain}.{key.algorithm}.pem"
        write_private_key(path, key)
    except NurtureError as exc:
        typer.echo(f"error ({exc.field}): {exc.message}" if exc.field else f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: cannot write {exc.filename or out}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"private key written to {path} (keep it secret)")
    typer.echo("publish this DNS TXT record:")
    typer.echo(f"name:  {key.dns_name}")
    typer.echo(f"value: {key.dns_value}")
    typer.echo("or, as a zone file line:")
    typer.echo(key.zone_line)

def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
