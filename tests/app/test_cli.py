"""The CLI as a user runs it: a real process against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from core.auth import ApiKey, User
from core.db import Database

ROOT = Path(__file__).resolve().parents[2]


def nurture(database_url: str, data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NURTURE_DATABASE_URL": database_url, "NURTURE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], input=stdin, capture_output=True, text=True,
        env=env, cwd=ROOT, timeout=60,
    )


async def test_user_add_stores_a_hashed_password(database_url: str, data_dir: Path, db: Database) -> None:
    done = nurture(database_url, data_dir, "user", "add", "olga@example.com", "--role", "sales",
                   "--password", "s3cret-pass", "--name", "Ольга")
    assert done.returncode == 0, done.stderr
    async with db.sessions() as session:
        user = await session.scalar(select(User).where(User.email == "olga@example.com"))
    assert user is not None and user.role == "sales" and user.name == "Ольга"
    assert "s3cret-pass" not in user.password_hash


async def test_user_add_with_bad_role_exits_non_zero_with_a_message(database_url: str, data_dir: Path) -> None:
    done = nurture(
        database_url, data_dir, "user", "add", "x@example.com", "--role", "boss", "--password", "long-enough"
    )
    assert done.returncode == 2
    assert "role" in done.stderr and "Traceback" not in done.stderr


async def test_apikey_create_prints_a_working_secret_once(database_url: str, data_dir: Path, db: Database) -> None:
    done = nurture(database_url, data_dir, "apikey", "create", "website", "--scope", "leads:write")
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("nrt_")
    async with db.sessions() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.name == "website"))
    assert key is not None and key.scopes == ["leads:write"] and secret not in key.key_hash


def test_migrate_is_idempotent(database_url: str, data_dir: Path) -> None:
    for _ in range(2):
        done = nurture(database_url, data_dir, "migrate")
        assert done.returncode == 0, done.stderr
