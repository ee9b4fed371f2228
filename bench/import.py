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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import write_leads_csv  # noqa: E402
from _harness import scratch_database  # noqa: E402

from core.db import Database  # noqa: E402
from leads.intake.import_rows import ImportOptions  # noqa: E402
from leads.intake.importer import import_file  # noqa: E402


async def bench(url: str, database: str, csv_path: Path) -> dict[str, object]:
    db = Database(url)
    try:
        started = time.perf_counter()
        run = await import_file(db, csv_path, ImportOptions(), ["bench-secret"], default_region="RU")
        seconds = time.perf_counter() - started
    finally:
        await db.dispose()
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
        csv_path = Path(tmp) / "leads.csv"
        write_leads_csv(csv_path, args.rows)
        with scratch_database(args.database) as url:
            print(json.dumps(asyncio.run(bench(url, args.database, csv_path))), flush=True)


if __name__ == "__main__":
    main()
