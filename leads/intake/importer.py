"""Running a CSV import of leads: record the ImportRun, read the file in batches of 1,000 rows
and keep the run's counts and errors, so 100,000 rows take seconds.

An import is a job, not a request: it owns its transactions (one per batch, plus the ImportRun
report), so an interrupted import keeps the batches it finished and is safe to run again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import clock
from core.db import Database
from core.errors import NotFound, NurtureError
from core.logging import get_logger
from core.metrics import LEADS_CREATED
from leads.fields import definitions
from leads.intake.csvfile import FileLayout, RowReader, UnreadableRow, inspect_file
from leads.intake.import_batch import BatchOutcome, BatchWriter
from leads.intake.import_rows import ImportOptions, ImportRow, RowChecker, RowError
from leads.models import Channel, CustomField, ImportRun

BATCH_ROWS = 1000
MAX_STORED_ERRORS = 1000

log = get_logger("nurture.import")
runs_t = cast(Table, ImportRun.__table__)

Progress = Callable[[int, int], None]


async def start_import(
    db: Database, path: Path, filename: str, options: ImportOptions, default_region: str = ""
) -> ImportRun:
    """Check the file and the options and record a queued ImportRun; nothing else is written.

    Raises Invalid / UnsupportedMediaType naming the file, mapping or option when the file cannot
    be imported at all (missing, binary, no email or phone column, unknown mapping target).
    """
    options = options.checked(default_region)
    async with db.sessions() as session:
        custom_keys = set(await definitions(session))
    layout = await asyncio.to_thread(inspect_file, path, options.mapping, custom_keys, options.encoding)
    async with db.sessions() as session:
        run = ImportRun(
            filename=filename[:500], mapping=layout.mapping(), dry_run=options.dry_run,
            status="queued", started_at=clock.now(),
            details={
                "encoding": layout.encoding, "delimiter": layout.delimiter,
                "unknown_columns": layout.unknown, "options": asdict(options),
                "source": options.source or filename[:200], "error_count": 0,
            },
        )
        session.add(run)
        await session.commit()
    return run


async def import_file(
    db: Database,
    path: Path,
    options: ImportOptions,
    secrets: list[str],
    default_region: str = "",
    progress: Progress | None = None,
    on_error: Callable[[RowError], None] | None = None,
) -> ImportRun:
    """Check, record and run an import in one go (the CLI and the benchmark)."""
    run = await start_import(db, path, path.name, options, default_region)
    return await run_import(db, run.id, path, secrets, progress, on_error)


async def run_import(
    db: Database,
    run_id: uuid.UUID,
    path: Path,
    secrets: list[str],
    progress: Progress | None = None,
    on_error: Callable[[RowError], None] | None = None,
) -> ImportRun:
    """Import the file of a queued ImportRun and return the finished run (status done/failed).

    Rows that fail validation are reported in the run and skipped; the good rows import. A run
    that cannot go on (the file vanished, the database went away) ends as "failed" with a message.
    `secrets` are the signing keys, to recognise people who asked to be erased (leads.privacy).
    """
    async with db.sessions() as session:
        run = await session.get(ImportRun, run_id)
        if run is None:
            raise NotFound(f"no import {run_id}", field="id")
        options = ImportOptions(**run.details["options"])
        defs = await definitions(session)
        run.status, run.started_at = "running", clock.now()
        await session.commit()
    started = time.perf_counter()
    importer = _Importer(db, run, options, defs, secrets, on_error)
    status, message = "done", None
    try:
        layout = await asyncio.to_thread(inspect_file, path, options.mapping, set(defs), options.encoding)
        with RowReader(path, layout) as rows:
            await importer.consume(layout, rows, progress)
    except NurtureError as exc:
        status, message = "failed", exc.message
    except Exception as exc:  # the report must say why the import stopped; the log has the trace
        log.exception("import failed", import_id=str(run_id))
        status, message = "failed", f"the import stopped: {type(exc).__name__}: {exc}"
    async with db.sessions() as session:
        run = await session.get(ImportRun, run_id)  # type: ignore[assignment]
        assert run is not None
        importer.fill(run)
        run.status, run.finished_at = status, clock.now()
        run.details = {**run.details, "seconds": round(time.perf_counter() - started, 3)}
        if message:
            run.details["message"] = message
        await session.commit()
    return run


class _Importer:
    """One run's reading, batching and counts; the rows are checked by RowChecker and written by
    BatchWriter."""

    def __init__(
        self, db: Database, run: ImportRun, options: ImportOptions, defs: dict[str, CustomField],
        secrets: list[str], on_error: Callable[[RowError], None] | None,
    ) -> None:
        self.db = db
        self.secrets = secrets
        self.run_id = run.id
        self.filename = run.filename
        self.source = run.details.get("source") or run.filename[:200]
        self.options = options
        self.defs = defs
        self.on_error = on_error
        self.total = self.created = self.updated = self.skipped = self.failed = 0
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0

    async def consume(self, layout: FileLayout, rows: RowReader, progress: Progress | None) -> None:
        checker = RowChecker(layout, self.options, self.defs, self.source)
        writer = BatchWriter(self.run_id, self.filename, self.options, self.secrets, checker.columns_by_target)
        batch: list[ImportRow] = []
        bad: list[RowError] = []
        unreadable: UnreadableRow | None = None
        try:
            for line, cells in rows:
                self.total += 1
                checked = checker.check(line, cells)
                if checked is None:
                    self.skipped += 1
                elif isinstance(checked, ImportRow):
                    batch.append(checked)
                else:
                    self.failed += 1
                    bad.extend(checked)
                if len(batch) + len(bad) >= BATCH_ROWS:
                    await self.flush(writer, batch, bad)
                    batch, bad = [], []
                    if progress:
                        progress(rows.bytes_read, rows.size)
        except UnreadableRow as exc:
            unreadable = exc
        if unreadable is not None:
            self.total += 1
            self.failed += 1
            bad.append(RowError(unreadable.line, None, f"the file cannot be read from here on: {unreadable.reason}"))
        await self.flush(writer, batch, bad)
        if progress:
            progress(rows.size, rows.size)

    async def flush(self, writer: BatchWriter, batch: list[ImportRow], bad: list[RowError]) -> None:
        """Write one batch and the run's counts in one transaction."""
        outcome = BatchOutcome()
        if batch:
            before = self.counters()
            try:
                async with self.db.sessions() as session:
                    outcome = await writer.apply(session, batch)
                    self.count(outcome, bad)
                    await self.save_progress(session)
                    await session.commit()
                self.after_commit(writer, outcome)
                return
            except IntegrityError:
                self.restore(before)
                # Someone wrote one of these identities without taking its lock (an admin edit of
                # an email, say): redo the batch row by row so only the clashing rows fail.
                outcome = await self.apply_one_by_one(writer, batch)
        async with self.db.sessions() as session:
            self.count(outcome, bad)
            await self.save_progress(session)
            await session.commit()
        self.after_commit(writer, outcome)

    async def apply_one_by_one(self, writer: BatchWriter, batch: list[ImportRow]) -> BatchOutcome:
        total = BatchOutcome()
        for row in batch:
            try:
                async with self.db.sessions() as session:
                    one = await writer.apply(session, [row])
                    await session.commit()
            except IntegrityError:
                one = BatchOutcome(errors=[RowError(
                    row.line, "email",
                    "another lead with this email or phone was saved at the same time; run the import again",
                )])
            total.created += one.created
            total.updated += one.updated
            total.skipped += one.skipped
            total.errors += one.errors
            total.new_identities += one.new_identities
        return total

    def counters(self) -> tuple[Any, ...]:
        return (self.total, self.created, self.updated, self.skipped, self.failed,
                list(self.errors), self.error_count)

    def restore(self, saved: tuple[Any, ...]) -> None:
        (self.total, self.created, self.updated, self.skipped, self.failed,
         self.errors, self.error_count) = saved

    def count(self, outcome: BatchOutcome, bad: list[RowError]) -> None:
        self.created += outcome.created
        self.updated += outcome.updated
        self.skipped += outcome.skipped
        self.failed += len({e.line for e in outcome.errors})
        for error in sorted([*bad, *outcome.errors], key=lambda e: e.line):
            self.error_count += 1
            if len(self.errors) < MAX_STORED_ERRORS:
                self.errors.append(error.as_json())
            if self.on_error:
                self.on_error(error)

    def after_commit(self, writer: BatchWriter, outcome: BatchOutcome) -> None:
        if self.options.dry_run:
            writer.plan(outcome.new_identities)
        elif outcome.created:
            LEADS_CREATED.labels(Channel.import_.value).inc(outcome.created)

    async def save_progress(self, session: AsyncSession) -> None:
        await session.execute(
            update(runs_t).where(runs_t.c.id == self.run_id).values(
                total_rows=self.total, created=self.created, updated=self.updated,
                skipped=self.skipped, failed=self.failed, errors=self.errors,
            )
        )

    def fill(self, run: ImportRun) -> None:
        run.total_rows, run.created, run.updated = self.total, self.created, self.updated
        run.skipped, run.failed, run.errors = self.skipped, self.failed, self.errors
        run.details = {**run.details, "error_count": self.error_count}
