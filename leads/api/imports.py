"""/v1/imports: upload a CSV of leads, follow its import, read the report with line numbers."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from core.db import Database
from core.errors import Invalid, NotFound, TooLarge, UnsupportedMediaType
from core.ids import new_id, parse_id
from core.logging import get_logger
from core.text import check_text, scrub
from core.web import Importer, SessionDep, SettingsDep
from leads.intake.import_rows import ImportOptions
from leads.intake.importer import run_import, start_import
from leads.models import ImportRun

router = APIRouter(prefix="/v1/imports", tags=["imports"])
log = get_logger("nurture.import")

# Files with fewer lines are imported before the response (201 with the report): a few
# seconds at most, and the caller needs no polling.
INLINE_LINES = 5_000
FORM_SLACK = 1024 * 1024  # multipart boundaries and the small option fields around the file

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The CSV file"},
                        "mapping": {"type": "string", "description": 'JSON {"column": "field" | "custom.<key>" | "-"}'},
                        "dry_run": {"type": "boolean"},
                        "region": {"type": "string", "description": "Phone region, e.g. RU"},
                        "tags": {"type": "string", "description": "Comma-separated; the field may repeat"},
                        "source": {"type": "string"},
                        "campaign": {"type": "string"},
                        "overwrite": {"type": "boolean", "description": "Replace filled fields"},
                    },
                }
            }
        },
    }
}


class ImportSummary(BaseModel):
    id: uuid.UUID
    filename: str
    status: str  # queued | running | done | failed
    dry_run: bool
    total_rows: int
    created: int
    updated: int
    skipped: int
    failed: int
    started_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, run: ImportRun) -> dict[str, Any]:
        return {k: getattr(run, k) for k in cls.model_fields}


class ImportReport(ImportSummary):
    error_count: int
    errors: list[dict[str, Any]]  # {"line", "field", "column", "message"}, the first 1,000
    mapping: dict[str, Any]
    unknown_columns: list[str]
    encoding: str | None
    delimiter: str | None
    message: str | None

    @classmethod
    def from_run(cls, run: ImportRun) -> ImportReport:
        details = run.details or {}
        return cls(
            **ImportSummary.of(run), error_count=details.get("error_count", len(run.errors)),
            errors=run.errors, mapping=run.mapping, unknown_columns=details.get("unknown_columns", []),
            encoding=details.get("encoding"), delimiter=details.get("delimiter"), message=details.get("message"),
        )


class ImportPage(BaseModel):
    items: list[ImportSummary]


@router.post("", status_code=202, response_model=ImportReport, openapi_extra=_UPLOAD_SCHEMA)
async def upload_import(
    request: Request,
    settings: SettingsDep,
    _key: Importer,
    wait: Annotated[bool, Query(description="Import before answering (201 with the report)")] = False,
) -> JSONResponse:
    """Upload a CSV (multipart field `file`) and import it: 202 {"id", "status"} and the import
    runs in the background (poll GET /v1/imports/{id}); small files or `?wait=true` give 201
    with the finished report."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType("send multipart/form-data with the CSV in the field 'file'", field="file")
    limit = settings.max_import_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_SLACK:
        raise TooLarge(f"the file is over {limit} bytes", field="file")
    form = await _limited(request, limit + FORM_SLACK).form(max_files=1, max_fields=50)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise Invalid("send the CSV as a multipart file in the field 'file'", field="file")
    options = _options(form)
    # Kept as the browser sent it, minus what PostgreSQL cannot store (NUL).
    filename = scrub(Path(upload.filename or "upload.csv").name)[:500] or "upload.csv"
    folder = settings.data_dir / "imports"
    path = folder / f"{new_id()}.csv"
    lines = await _save(upload, path, limit)
    db: Database = request.app.state.db
    try:
        run = await start_import(db, path, filename, options, settings.default_region)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    location = {"location": f"/v1/imports/{run.id}"}
    if wait or lines < INLINE_LINES:
        try:
            run = await run_import(db, run.id, path, settings.signing_keys())
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        report = ImportReport.from_run(run).model_dump(mode="json")
        return JSONResponse(report, status_code=201, headers=location)
    _spawn(request.app, _import_in_background(db, run.id, path, settings.signing_keys()))
    return JSONResponse({"id": str(run.id), "status": run.status}, status_code=202, headers=location)


@router.get("", response_model=ImportPage)
async def list_imports(
    session: SessionDep, _key: Importer, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> ImportPage:
    """The latest imports first."""
    runs = await session.scalars(select(ImportRun).order_by(ImportRun.id.desc()).limit(limit))
    return ImportPage(items=[ImportSummary(**ImportSummary.of(run)) for run in runs])


@router.get("/{import_id}", response_model=ImportReport)
async def read_import(import_id: str, session: SessionDep, _key: Importer) -> ImportReport:
    run = await session.get(ImportRun, parse_id(import_id, "import_id"))
    if run is None:
        raise NotFound(f"no import {import_id}", field="import_id")
    return ImportReport.from_run(run)


def running_imports(app: FastAPI) -> set[asyncio.Task[None]]:
    """Imports this process runs in the background (held so they are not garbage-collected)."""
    tasks: set[asyncio.Task[None]] | None = getattr(app.state, "import_tasks", None)
    if tasks is None:
        tasks = set()
        app.state.import_tasks = tasks
    return tasks


def _spawn(app: FastAPI, job: Any) -> None:
    # An in-process task until the worker takes imports over (arq job "leads.import").
    task: asyncio.Task[None] = asyncio.create_task(job)
    tasks = running_imports(app)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _import_in_background(db: Database, run_id: uuid.UUID, path: Path, secrets: list[str]) -> None:
    try:
        await run_import(db, run_id, path, secrets)
    except Exception:  # run_import records its own failures; this is the database being gone
        log.exception("background import failed", import_id=str(run_id))
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)


def _limited(request: Request, limit: int) -> Request:
    """The request with a body that refuses (413) once it passes `limit` bytes, so an upload
    without Content-Length cannot fill the disk before we look at its size."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise TooLarge(f"the file is over {limit - FORM_SLACK} bytes", field="file")
        return message

    return Request(request.scope, receive)


async def _save(upload: UploadFile, path: Path, limit: int) -> int:
    """Copy the upload to the data directory (in a thread: it is disk I/O); returns its lines."""
    return await asyncio.to_thread(_copy, upload.file, path, limit)


def _copy(source: BinaryIO, path: Path, limit: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = lines = 0
    source.seek(0)
    try:
        with path.open("wb") as out:
            while chunk := source.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the file is over {limit} bytes", field="file")
                lines += chunk.count(b"\n")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return lines


def _options(form: FormData) -> ImportOptions:
    mapping: dict[str, str] = {}
    raw = _text(form, "mapping")
    if raw:
        try:
            mapping = json.loads(raw)
        except ValueError:
            raise Invalid("must be a JSON object such as {\"Почта\": \"email\"}", field="mapping") from None
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise Invalid("must be a JSON object of column names to field names", field="mapping")
    tags = [value for value in form.getlist("tags") if isinstance(value, str)]
    check_text(tags, "tags")  # stored with the run's options; PostgreSQL refuses NUL
    return ImportOptions(
        mapping=mapping, dry_run=_flag(form, "dry_run"), region=_text(form, "region"), tags=tags,
        source=_text(form, "source"), campaign=_text(form, "campaign"), overwrite=_flag(form, "overwrite"),
    )


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("must be a text field, not a file", field=name)
    if "\x00" in value:
        raise Invalid("must not contain NUL characters", field=name)
    return value.strip() or None


def _flag(form: FormData, name: str) -> bool:
    value = (_text(form, name) or "").lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise Invalid("must be true or false", field=name)
