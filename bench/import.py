"""CSV import speed: a seeded 100,000-row file into a fresh, migrated database, through the
code path of `nurture import-leads`. Prints one JSON line.

    python bench/import.py [--rows N] [--database postgresql|sqlite]

PostgreSQL comes from NURTURE_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test);
a temporary database is created next to it and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _data import write_leads_csv  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from core.db import Database  # noqa: E402
from leads.intake.import_rows import ImportOptions  # noqa: E402
from leads.intake.importer import import_file  # noqa: E402
from migrations import upgrade  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def bench(database: str, rows: int, tmp: Path) -> dict[str, object]:
    csv_path = tmp / "leads.csv"
    write_leads_csv(csv_path, rows)
    admin = make_url(os.environ.get("NURTURE_BENCH_DATABASE_URL", DEFAULT_PG)).set(drivername="postgresql")
    name = f"nurture_bench_{uuid.uuid4().hex[:10]}"
    if database == "postgresql":
        admin_url = admin.render_as_string(hide_password=False)
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
        url = admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    db = Database(url)
    try:
        await upgrade(db.engine)
        started = time.perf_counter()
        run = await import_file(db, csv_path, ImportOptions(), ["bench-secret"], default_region="RU")
        seconds = time.perf_counter() - started
    finally:
        await db.dispose()
        if database == "postgresql":
            await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if run.status != "done":
        raise SystemExit(f"import {run.status}: {run.details.get('message')}")
    return {
        "bench": "import", "database": database, "rows": run.total_rows,
        "seconds": round(seconds, 2), "rows_per_s": round(run.total_rows / seconds),
        "created": run.created, "updated": run.updated, "skipped": run.skipped, "failed": run.failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(bench(args.database, args.rows, Path(tmp)))))


if __name__ == "__main__":
    main()
