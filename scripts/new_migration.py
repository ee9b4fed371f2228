"""Write a migration for the difference between the models and the migrations' head.

Usage: python scripts/new_migration.py "what changed" [--rev-id 0002]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alembic import command  # noqa: E402

from core.db import create_engine  # noqa: E402
from migrations import alembic_config, upgrade  # noqa: E402


async def main(message: str, rev_id: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/m.db"
        engine = create_engine(url)
        await upgrade(engine)

        def revise(connection: object) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.revision(config, message=message, autogenerate=True, rev_id=rev_id)

        async with engine.begin() as conn:
            await conn.run_sync(revise)
        await engine.dispose()


if __name__ == "__main__":
    args = sys.argv[1:]
    rev = None
    if "--rev-id" in args:
        i = args.index("--rev-id")
        rev = args[i + 1]
        del args[i : i + 2]
    asyncio.run(main(args[0] if args else "change", rev))
