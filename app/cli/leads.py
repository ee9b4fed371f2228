"""`nurture import-leads | rescore | train-model`: the lead base in bulk: a CSV import, every lead
scored afresh, the predictive score fitted."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from app.cli.kit import database, run_async
from core.errors import NurtureError
from core.settings import get_settings


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
