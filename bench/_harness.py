"""Helpers shared by the benchmarks: throwaway databases, a server in a subprocess, load loops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("NURTURE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def scratch_database(kind: str) -> Iterator[str]:
    """A new, migrated database (SQLite file or PostgreSQL database) dropped afterwards."""
    from core.db import Database
    from migrations import upgrade

    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            asyncio.run(_migrate(url, Database, upgrade))
            yield url
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL).set(drivername="postgresql")
    name = f"nurture_bench_{uuid.uuid4().hex[:10]}"

    async def admin_sql(sql: str) -> None:
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    url = admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    try:
        asyncio.run(_migrate(url, Database, upgrade))
        yield url
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _migrate(url: str, database_cls: Any, upgrade: Any) -> None:
    db = database_cls(url)
    await upgrade(db.engine)
    await db.dispose()


@contextlib.contextmanager
def server(app_factory: str, env: dict[str, str], workers: int = 1) -> Iterator[str]:
    """Run `uvicorn --factory app_factory` on a free loopback port; yields its base URL."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", app_factory, "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "--no-access-log", "--workers", str(workers),
        "--no-proxy-headers",  # as `nurture serve` runs it
    ]
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench'}", **env}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {' '.join(cmd)}") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def steady_client() -> Iterator[None]:
    """No garbage collection in the load generator while it measures: a full collection over the
    thousands of tasks an open loop holds stalled this process for 40-50 ms, and every request in
    flight meanwhile was counted that much slower, as if the server had stalled."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def closed_loop(
    send: Callable[[int], Awaitable[bool]], concurrency: int, total: int, max_seconds: float
) -> dict[str, Any]:
    """`concurrency` clients each sending back-to-back until `total` requests or the time limit."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    deadline = time.perf_counter() + max_seconds

    async def client() -> None:
        nonlocal errors
        for i in counter:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            ok = await send(i)
            latencies.append(time.perf_counter() - started)
            errors += 0 if ok else 1

    with steady_client():
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return _figures(latencies, errors, elapsed)


async def open_loop(
    send: Callable[[int], Awaitable[bool]], rate: float, seconds: float, concurrency: int
) -> dict[str, Any]:
    """Requests offered at a fixed `rate` per second (at most `concurrency` in flight):
    latency measured from the scheduled start, so queueing delay counts."""
    latencies: list[float] = []
    errors = 0
    gate = asyncio.Semaphore(concurrency)
    total = int(rate * seconds)

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        async with gate:
            ok = await send(i)
        latencies.append(time.perf_counter() - scheduled)
        errors += 0 if ok else 1

    tasks = []
    with steady_client():
        start = time.perf_counter()
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    figures = _figures(latencies, errors, time.perf_counter() - start)
    figures["offered_per_s"] = rate
    return figures


def _figures(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
    }


class LeanHttp:
    """A keep-alive HTTP/1.1 client that spends as little CPU as it can: requests are encoded by
    the caller once, responses are read by Content-Length. On a 2-core machine the load generator
    shares the CPU with the server, so a heavy client would hide the server's real speed."""

    def __init__(self, base: str, connections: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.connections = connections
        self.opened = 0

    @staticmethod
    def form_post(path: str, body: bytes, content_type: str = "application/x-www-form-urlencoded") -> bytes:
        head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: application/json\r\n"
                f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n")
        return head.encode() + body

    async def request(self, raw: bytes) -> int:
        """Send one encoded request; returns the response status."""
        if self.idle.empty() and self.opened < self.connections:
            self.opened += 1
            conn = await asyncio.open_connection(self.host, self.port)
        else:
            conn = await self.idle.get()
        reader, writer = conn
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        start = head.lower().find(b"content-length:")
        length = int(head[start + 15:head.index(b"\r\n", start)]) if start >= 0 else 0
        if length:
            await reader.readexactly(length)
        self.idle.put_nowait(conn)
        return status

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()


@contextlib.asynccontextmanager
async def lean_http(base: str, connections: int) -> AsyncIterator[LeanHttp]:
    client = LeanHttp(base, connections)
    try:
        yield client
    finally:
        await client.close()


def pg_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a plain DSN for asyncpg."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def pg_connection(url: str) -> AsyncIterator[Any]:
    """A raw asyncpg connection (COPY, quick counts) to the database at the SQLAlchemy URL `url`."""
    import asyncpg

    conn = await asyncpg.connect(pg_dsn(url))
    try:
        yield conn
    finally:
        await conn.close()


def uv_run(main: Awaitable[Any]) -> Any:
    """asyncio.run on uvloop, as the server runs."""
    import uvloop

    return uvloop.run(main)  # type: ignore[arg-type]
