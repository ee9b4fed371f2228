"""The event pipeline on PostgreSQL, from commit to handler, against raw arq in the same run.

Scenarios, each with its worker processes started afresh (and a fresh PostgreSQL database for the
pipeline):

* raw arq: one worker process running an arq Worker with a single no-op job (same max_jobs,
  poll delay and Redis as nurture's worker); the producer enqueues jobs with
  `ArqRedis.enqueue_job`. This is the ceiling: what arq alone does on this machine.
* pipeline with 1 and 2 workers (`worker.main.run_worker`, relay + dispatcher, one no-op
  handler `bench.noop` for `bench.ping`); the producer commits the outbox rows `core.outbox.emit`
  writes, through a lean asyncpg client (see PipelineTarget), and nudges the relay through Redis
  after each commit, as the API does.

Workers run on plain asyncio, as `nurture worker` does; the producer runs on uvloop.

Each scenario has two phases:

* throughput: `--events` events committed by 8 producer tasks, 10 events per transaction (raw
  arq: 10 `enqueue_job` calls gathered), timed from the first commit until every event is done
  (pipeline: no `outbox_events` row with `done_at` NULL, polled every 20 ms once every handler
  has started; raw: every job has started) -> events/s.
* latency: one event per transaction (raw: one enqueue) offered at `--rate` per second for
  `--seconds` (open loop, at most 24 in flight). Latency is from the wall-clock time taken right
  AFTER the producer's commit returned (raw: after `enqueue_job` returned) to the wall-clock
  time the handler (raw: the job function) started, matched by event id; the handler only notes
  its start in memory, and a task in the worker process pushes those notes to Redis every 20 ms.

Prints one JSON line per scenario (the pipeline's also splits the latency phase's time by the
outbox rows' own timestamps: emit -> relayed -> done) and a summary line. The aim (issue): pipeline throughput at
least 50% of raw arq's, and p50 < 50 ms, p99 < 500 ms at 1,000 events/s.

Redis: NURTURE_BENCH_REDIS_URL (default redis://127.0.0.1:6379/9); the bench uses database 9
when the URL names none (or 0), and FLUSHDBs it before and after each scenario, so point it at a
database nobody else uses (two runs of this bench take turns: see bench_redis). PostgreSQL: a
scratch database per pipeline scenario (see _harness.scratch_database). Every wait is bounded
(`--timeout` per phase); an incomplete phase is reported and the exit code is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import IO, Any

from _harness import ROOT, percentile, pg_connection, pg_dsn, scratch_database, uv_run

PING = "bench.ping"
HANDLER = "bench.noop"
RAW_QUEUE = "bench:raw:queue"
START_KEY = "bench:starts:"  # + phase: "<id> <wall time of handler start>" per event
READY_KEY = "bench:ready:"  # + pid: a raw worker that has started
LOCK_KEY = "bench:lock"  # a run of this bench is using the Redis database
FLUSH_SECONDS = 0.02
POLL_SECONDS = 0.02
PRODUCERS = 8  # throughput phase: producer tasks
BATCH = 10  # throughput phase: events per transaction / enqueues per gather
IN_FLIGHT = 24  # latency phase: commits in flight at most (and the producer's connection pool)
WARMUP = 500
AIM = {"vs_raw": 0.5, "p50_ms": 50.0, "p99_ms": 500.0}


def bench_redis_url() -> str:
    from urllib.parse import urlsplit, urlunsplit

    url = urlsplit(os.environ.get("NURTURE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"))
    if url.scheme.startswith("redis") and url.path.strip("/") in ("", "0"):
        url = url._replace(path="/9")  # never database 0: the bench flushes its database
    return urlunsplit(url)


# --- the worker processes ------------------------------------------------------------------------


class StartLog:
    """Handler starts noted in memory (no I/O in the handler) and pushed to Redis every 20 ms."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.pending: dict[str, list[str]] = {}
        self.task: asyncio.Task[None] | None = None

    def note(self, phase: str, ident: str) -> None:
        self.pending.setdefault(phase, []).append(f"{ident} {time.time():.6f}")

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for phase, items in pending.items():
            await self.redis.rpush(START_KEY + phase, *items)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception as exc:  # the producer times out on the missing starts and says so
                print(f"bench start log: {exc!r}", file=sys.stderr, flush=True)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(Exception):
            await self.flush()
        await self.redis.aclose()


async def pipeline_worker(args: argparse.Namespace) -> None:
    """nurture's worker (relay, dispatcher, sweeper) with the no-op handler."""
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncSession

    from core.events import Event, handles
    from core.settings import Settings
    from worker.main import run_worker

    starts = StartLog(Redis.from_url(args.redis_url))

    @handles(PING, name=HANDLER)
    async def noop(session: AsyncSession, event: Event) -> None:
        starts.note(event.payload["p"], str(event.id))

    settings = Settings(
        database_url=args.database_url, redis_url=args.redis_url, worker_concurrency=args.concurrency,
        db_pool_size=args.pool_size, job_timeout=10, outbox_poll_seconds=1.0, sweep_seconds=3600,
        log_level="WARNING",
    )
    starts.start()
    try:
        with contextlib.suppress(asyncio.CancelledError):  # arq cancels its main task on SIGTERM
            await run_worker(settings, args.redis_url, [noop])
    finally:
        await starts.close()


async def raw_worker(args: argparse.Namespace) -> None:
    """A bare arq Worker with one no-op job, configured as nurture's (max_jobs, poll delay, no results)."""
    from arq import Worker
    from arq.connections import RedisSettings
    from arq.worker import func
    from redis.asyncio import Redis

    from worker.main import POLL_SECONDS

    starts = StartLog(Redis.from_url(args.redis_url))

    async def noop_job(ctx: dict[str, Any], phase: str) -> None:
        starts.note(phase, ctx["job_id"])

    async def on_startup(ctx: dict[str, Any]) -> None:
        await ctx["redis"].set(READY_KEY + str(os.getpid()), b"1")

    worker = Worker(
        functions=[func(noop_job, name=HANDLER)],  # type: ignore[arg-type]
        queue_name=RAW_QUEUE, redis_settings=RedisSettings.from_dsn(args.redis_url), on_startup=on_startup,
        max_jobs=args.concurrency, job_timeout=10, keep_result=0, poll_delay=POLL_SECONDS, handle_signals=True,
        job_completion_wait=10,
    )
    starts.start()
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.async_run()
    finally:
        with contextlib.suppress(Exception):
            await worker.close()
        await starts.close()


def run_as_worker(args: argparse.Namespace) -> None:
    from core import logging as logs

    logs.configure("WARNING", json=True)
    # as `nurture worker` runs it: plain asyncio
    asyncio.run(pipeline_worker(args) if args.as_worker == "pipeline" else raw_worker(args))


class WorkerDied(RuntimeError):
    pass


class WorkerGroup:
    """`count` worker processes of `kind` (this file with --as-worker), output kept in temp files."""

    def __init__(self, kind: str, count: int, redis_url: str, database_url: str, concurrency: int,
                 pool_size: int) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []
        self.files = contextlib.ExitStack()
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench'}"}
        for _ in range(count):
            log = self.files.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed in stop)
            self.logs.append(log)
            cmd = [sys.executable, __file__, "--as-worker", kind, "--redis-url", redis_url,
                   "--database-url", database_url, "--concurrency", str(concurrency), "--pool-size", str(pool_size)]
            self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise WorkerDied(f"worker process {proc.pid} exited with {proc.returncode}")

    def stop(self) -> list[str]:
        """Terminate (then kill) the workers; their output lines."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        lines: list[str] = []
        for log in self.logs:
            log.seek(0)
            lines.extend(line for line in log.read().decode(errors="replace").splitlines() if line.strip())
        self.files.close()
        return lines


# --- the producer side -----------------------------------------------------------------------------


class Target:
    """What the producer drives: submit events, see how many are still to do, read handler starts."""

    def __init__(self, redis: Any, group: WorkerGroup) -> None:
        self.redis = redis
        self.group = group
        self.expected: dict[str, int] = {}

    async def submit(self, phase: str, count: int) -> list[str]:
        """Commit `count` events (one transaction / one gather of enqueues); their ids."""
        raise NotImplementedError

    async def remaining(self, phase: str) -> int:
        raise NotImplementedError

    async def ready(self) -> bool:
        raise NotImplementedError

    async def started(self, phase: str) -> int:
        return int(await self.redis.llen(START_KEY + phase))

    async def starts(self, phase: str) -> list[tuple[str, float]]:
        out = []
        for raw in await self.redis.lrange(START_KEY + phase, 0, -1):
            ident, at = raw.decode().split()
            out.append((ident, float(at)))
        return out

    async def extras(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        await self.redis.aclose()


class PipelineTarget(Target):
    """Commits events as the API does (the outbox row, then the nudge after commit), but through a
    lean asyncpg client: SQLAlchemy's session costs the producer about 1 ms of CPU per commit, a
    whole core at 1,000 commits/s on this 2-core machine, which the pipeline under test needs."""

    INSERT = "INSERT INTO outbox_events (id, name, payload, created_at) VALUES ($1, $2, $3::jsonb, $4)"

    def __init__(self, redis: Any, group: WorkerGroup, database_url: str, workers: int) -> None:
        from core.db import Database
        from core.outbox import RedisNudge, set_nudge

        super().__init__(redis, group)
        self.workers = workers
        self.database_url = database_url
        self.db = Database(database_url, pool_size=2)
        self.pool: Any = None
        set_nudge(RedisNudge(redis))  # a commit that emitted wakes the relay, as in the API

    async def submit(self, phase: str, count: int) -> list[str]:
        import asyncpg

        from core import clock
        from core.ids import new_id
        from core.outbox import nudge

        if self.pool is None:
            self.pool = await asyncpg.create_pool(pg_dsn(self.database_url), min_size=IN_FLIGHT, max_size=IN_FLIGHT)
        payload = json.dumps({"p": phase})
        rows = [(new_id(), PING, payload, clock.now()) for _ in range(count)]
        async with self.pool.acquire() as conn:
            if count == 1:
                await conn.execute(self.INSERT, *rows[0])  # one statement: its own transaction
            else:
                async with conn.transaction():
                    await conn.executemany(self.INSERT, rows)
        nudge()
        return [str(row[0]) for row in rows]

    async def remaining(self, phase: str) -> int:
        """Undone events; while handler starts are still missing, that count instead: a count(*) of
        a large undone backlog every 20 ms would take CPU from the pipeline being measured."""
        from sqlalchemy import func, select

        from core.outbox import OutboxEvent

        if (missing := self.expected.get(phase, 0) - await self.started(phase)) > 0:
            return missing
        async with self.db.sessions() as session:
            query = select(func.count()).select_from(OutboxEvent).where(OutboxEvent.done_at.is_(None))
            return int(await session.scalar(query) or 0)

    async def ready(self) -> bool:
        from worker.main import HEARTBEAT_PREFIX

        return len([key async for key in self.redis.scan_iter(match=HEARTBEAT_PREFIX + "*")]) >= self.workers

    async def extras(self) -> dict[str, Any]:
        from sqlalchemy import func, select

        from core.outbox import FailedEvent, HandledEvent, OutboxEvent

        async with self.db.sessions() as session:
            extras: dict[str, Any] = {
                "events_in_outbox": await session.scalar(select(func.count()).select_from(OutboxEvent)),
                "handled_records": await session.scalar(
                    select(func.count()).select_from(HandledEvent).where(HandledEvent.handler == HANDLER)
                ),
                "dead_letters": await session.scalar(select(func.count()).select_from(FailedEvent)),
            }
            # where the latency phase's time went, by the rows' own clocks: created_at is taken in
            # emit(), before the commit; relayed_at after the relay enqueued; done_at in the handler's
            # transaction
            rows = (await session.execute(
                select(OutboxEvent.created_at, OutboxEvent.relayed_at, OutboxEvent.done_at)
                .where(OutboxEvent.payload["p"].as_string() == "lat")
            )).all()
        if rows:
            relayed = [(r.relayed_at - r.created_at).total_seconds() for r in rows if r.relayed_at]
            done = [(r.done_at - r.relayed_at).total_seconds() for r in rows if r.done_at and r.relayed_at]
            extras["latency_breakdown_ms"] = {
                "emit_to_relayed_p50": round(percentile(relayed, 50) * 1000, 2),
                "emit_to_relayed_p99": round(percentile(relayed, 99) * 1000, 2),
                "relayed_to_done_p50": round(percentile(done, 50) * 1000, 2),
                "relayed_to_done_p99": round(percentile(done, 99) * 1000, 2),
            }
        return extras

    async def close(self) -> None:
        from core.outbox import set_nudge

        set_nudge(None)
        if self.pool is not None:
            await self.pool.close()
        await self.db.dispose()
        await super().close()


class RawTarget(Target):
    def __init__(self, redis: Any, group: WorkerGroup, queue: Any, workers: int) -> None:
        super().__init__(redis, group)
        self.queue = queue
        self.workers = workers

    async def submit(self, phase: str, count: int) -> list[str]:
        jobs = await asyncio.gather(*(self.queue.enqueue_job(HANDLER, phase) for _ in range(count)))
        return [job.job_id for job in jobs if job is not None]

    async def remaining(self, phase: str) -> int:
        return self.expected.get(phase, 0) - await self.started(phase)

    async def ready(self) -> bool:
        return len([key async for key in self.redis.scan_iter(match=READY_KEY + "*")]) >= self.workers

    async def close(self) -> None:
        await self.queue.aclose()
        await super().close()


async def wait_until(check: Callable[[], Awaitable[bool]], deadline: float, group: WorkerGroup) -> bool:
    while True:
        if await check():
            return True
        group.check_alive()
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)


async def settle(target: Target, phase: str, deadline: float) -> tuple[bool, float]:
    """Wait until the phase's events are all done; True and the perf time it was seen, or False."""

    async def done() -> bool:
        return await target.remaining(phase) <= 0

    ok = await wait_until(done, deadline, target.group)
    return ok, time.perf_counter()


def latency_figures(committed: dict[str, float], starts: list[tuple[str, float]]) -> dict[str, Any]:
    latencies = [at - committed[ident] for ident, at in starts if ident in committed]
    unique = len({ident for ident, _ in starts})
    return {
        "starts": len(starts),
        "duplicate_starts": len(starts) - unique,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
    }


async def collect_starts(target: Target, phase: str, deadline: float) -> list[tuple[str, float]]:
    """The phase's handler starts, once every committed event's start has reached Redis."""
    expected = target.expected[phase]

    async def flushed() -> bool:
        return await target.started(phase) >= expected

    await wait_until(flushed, deadline, target.group)
    await asyncio.sleep(3 * FLUSH_SECONDS)  # a duplicate start would come in the same flush or just after
    return await target.starts(phase)


async def warm_up(target: Target, limit: float) -> None:
    deadline = time.perf_counter() + limit
    if not await wait_until(target.ready, deadline, target.group):
        raise WorkerDied("the workers did not start in time")
    target.expected["warm"] = WARMUP
    try:
        async with asyncio.timeout(limit):
            for _ in range(0, WARMUP, BATCH):
                await target.submit("warm", BATCH)
    except TimeoutError:
        raise WorkerDied(f"warm-up events not committed within {limit} s") from None
    ok, _ = await settle(target, "warm", deadline)
    if not ok:
        raise WorkerDied(f"warm-up events not done within {limit} s")


async def throughput(target: Target, events: int, limit: float) -> dict[str, Any]:
    phase = "tp"
    target.expected[phase] = events
    committed: dict[str, float] = {}
    batches = iter(range(0, events, BATCH))
    last_commit = 0.0

    async def producer() -> None:
        nonlocal last_commit
        for first in batches:
            ids = await target.submit(phase, min(BATCH, events - first))
            now = time.time()
            committed.update((ident, now) for ident in ids)
            last_commit = time.perf_counter()

    started = time.perf_counter()
    deadline = started + limit
    producers = asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    try:
        await asyncio.wait_for(asyncio.shield(producers), limit)
    except TimeoutError:
        producers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producers
        return {"complete": False, "committed": len(committed), "error": "producer timed out"}
    ok, seen = await settle(target, phase, deadline)
    elapsed = seen - started
    result: dict[str, Any] = {
        "complete": ok,
        "events": events,
        "seconds": round(elapsed, 3),
        "per_s": round(events / elapsed, 1) if ok else None,
        "produced_per_s": round(events / (last_commit - started), 1),
        "drain_after_last_commit_s": round(seen - last_commit, 3),
    }
    if not ok:
        result["remaining"] = await target.remaining(phase)
        return result
    # commit -> start under saturation: mostly the backlog's queueing, for reference
    saturated = latency_figures(committed, await collect_starts(target, phase, time.perf_counter() + 10))
    result["saturated_latency"] = saturated
    result["handler_starts"] = saturated["starts"]
    return result


async def latency(target: Target, rate: float, seconds: float, limit: float) -> dict[str, Any]:
    phase = "lat"
    total = int(rate * seconds)
    target.expected[phase] = total
    committed: dict[str, float] = {}
    commit_ms: list[float] = []
    gate = asyncio.Semaphore(IN_FLIGHT)
    errors: list[str] = []

    async def one() -> None:
        async with gate:
            began = time.perf_counter()
            try:
                ids = await target.submit(phase, 1)
            except Exception as exc:
                errors.append(repr(exc))
                return
            committed[ids[0]] = time.time()
            commit_ms.append((time.perf_counter() - began) * 1000)

    start = time.perf_counter()
    tasks = []
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    _, late = await asyncio.wait(tasks, timeout=max(1.0, start + limit - time.perf_counter()))
    for task in late:  # commits that hang (the database is away): counted as producer errors
        task.cancel()
        errors.append("commit timed out")
    produced = time.perf_counter() - start
    target.expected[phase] = len(committed)
    ok, _ = await settle(target, phase, start + limit)
    result: dict[str, Any] = {
        "complete": ok,
        "offered_per_s": rate,
        "seconds": seconds,
        "committed": len(committed),
        "producer_errors": len(errors),
        "achieved_per_s": round(len(committed) / produced, 1),
        "commit_p50_ms": round(percentile(commit_ms, 50), 2),
        "commit_p99_ms": round(percentile(commit_ms, 99), 2),
    }
    if errors:
        result["first_error"] = errors[0]
    if not ok:
        result["remaining"] = await target.remaining(phase)
        return result
    result.update(latency_figures(committed, await collect_starts(target, phase, time.perf_counter() + 10)))
    result["complete"] = result["starts"] >= len(committed)
    return result


async def run_phases(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    try:
        await warm_up(target, args.timeout)
        result: dict[str, Any] = {"throughput": await throughput(target, args.events, args.timeout)}
        if result["throughput"]["complete"]:
            result["latency"] = await latency(target, args.rate, args.seconds, args.timeout + args.seconds)
        result.update(await target.extras())
        return result
    finally:
        await target.close()


async def measure_pipeline(database_url: str, redis_url: str, workers: int, group: WorkerGroup,
                           args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    return await run_phases(PipelineTarget(Redis.from_url(redis_url), group, database_url, workers), args)


async def measure_raw(redis_url: str, workers: int, group: WorkerGroup, args: argparse.Namespace) -> dict[str, Any]:
    from arq.connections import RedisSettings, create_pool
    from redis.asyncio import Redis

    queue = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=RAW_QUEUE)
    return await run_phases(RawTarget(Redis.from_url(redis_url), group, queue, workers), args)


async def connection_budget(database_url: str) -> int:
    """PostgreSQL connections the workers may hold together (what the producer and slack leave)."""

    async with pg_connection(database_url) as conn:
        limit = int(await conn.fetchval("SHOW max_connections"))
        reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
    return limit - reserved - IN_FLIGHT - 4


@contextlib.contextmanager
def bench_redis(redis_url: str, hold_seconds: float) -> Iterator[None]:
    """The bench's Redis database, emptied, for one scenario, and emptied again after it. Another
    run of this bench on the same database waits for the lock (up to `hold_seconds`) instead of
    flushing the database under this one."""
    from redis import Redis

    client = Redis.from_url(redis_url)
    token = f"{os.getpid()}:{time.time()}".encode()
    ttl = int(hold_seconds) + 60  # a crashed run frees the database at last
    owned = False
    try:
        deadline = time.monotonic() + hold_seconds
        while not client.set(LOCK_KEY, token, nx=True, ex=ttl):
            if time.monotonic() > deadline:
                raise RuntimeError(f"another run of the bench holds {redis_url} ({LOCK_KEY})")
            time.sleep(1)
        owned = True
        with client.pipeline(transaction=True) as pipe:  # FLUSHDB keeps the lock: one transaction
            pipe.flushdb()
            pipe.set(LOCK_KEY, token, ex=ttl)
            pipe.execute()
        yield
    finally:
        if owned and client.get(LOCK_KEY) == token:
            client.flushdb()
        client.close()


def scenario(label: str, kind: str, workers: int, redis_url: str, database_url: str, args: argparse.Namespace,
             pool_size: int) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "pipeline", "target": label, "workers": workers,
                              "concurrency": args.concurrency}
    if kind == "pipeline":
        result["db_pool_per_worker"] = pool_size * 2
    with bench_redis(redis_url, 3 * args.timeout + args.seconds + 120):
        result["load_avg_before"] = round(os.getloadavg()[0], 2)
        group = WorkerGroup(kind, workers, redis_url, database_url, args.concurrency, pool_size)
        try:
            if kind == "pipeline":
                result.update(uv_run(measure_pipeline(database_url, redis_url, workers, group, args)))
            else:
                result.update(uv_run(measure_raw(redis_url, workers, group, args)))
        except WorkerDied as exc:
            result["error"] = str(exc)
        finally:
            lines = group.stop()
    result["load_avg_after"] = round(os.getloadavg()[0], 2)  # the host is shared: a busy one skews every figure
    result["complete"] = "error" not in result and all(
        result.get(phase, {}).get("complete", False) for phase in ("throughput", "latency")
    )
    if lines:
        result["worker_output_lines"] = len(lines)
        result["worker_output"] = [line[:400] for line in lines[:8]]
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000, help="events in the throughput phase")
    parser.add_argument("--rate", type=float, default=1000, help="offered events/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=10, help="length of the latency phase")
    parser.add_argument("--workers", default="1,2", help="pipeline worker process counts")
    parser.add_argument("--concurrency", type=int, default=50, help="jobs one worker runs at once (max_jobs)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a phase may take at most")
    parser.add_argument("--as-worker", choices=["pipeline", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--pool-size", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_worker:
        run_as_worker(args)
        return

    redis_url = bench_redis_url()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    raw = scenario("raw_arq", "raw", 1, redis_url, "", args, 0)
    pipeline: dict[int, dict[str, Any]] = {}
    for count in counts:
        with scratch_database("postgresql") as url:
            budget = uv_run(connection_budget(url))
            # pool_size + max_overflow (= pool_size): the jobs in flight, the relay and the sweeper
            pool_size = max(2, min(args.concurrency + 2, budget // count) // 2)
            pipeline[count] = scenario(f"pipeline_{count}", "pipeline", count, redis_url, url, args, pool_size)

    def get(result: dict[str, Any], phase: str, key: str) -> Any:
        return result.get(phase, {}).get(key)

    raw_per_s = get(raw, "throughput", "per_s")
    summary: dict[str, Any] = {"bench": "pipeline", "summary": True, "cpus": os.cpu_count(), "raw_arq_per_s": raw_per_s}
    for count, result in pipeline.items():
        per_s = get(result, "throughput", "per_s")
        suffix = f"{count}_worker" if count == 1 else f"{count}_workers"
        summary[f"pipeline_{suffix}_per_s"] = per_s
        summary[f"vs_raw_{count}"] = round(per_s / raw_per_s, 3) if per_s and raw_per_s else None
    for count, result in pipeline.items():
        summary[f"p50_ms_{count}"] = get(result, "latency", "p50_ms")
        summary[f"p99_ms_{count}"] = get(result, "latency", "p99_ms")
        summary[f"achieved_per_s_{count}"] = get(result, "latency", "achieved_per_s")
    summary["raw_p50_ms"] = get(raw, "latency", "p50_ms")
    summary["raw_p99_ms"] = get(raw, "latency", "p99_ms")
    summary["offered_per_s"] = args.rate
    summary["aim"] = AIM
    for count in pipeline:
        vs_raw, p50, p99 = summary[f"vs_raw_{count}"], summary[f"p50_ms_{count}"], summary[f"p99_ms_{count}"]
        summary[f"aim_met_{count}"] = (
            vs_raw is not None and p50 is not None and p99 is not None
            and vs_raw >= AIM["vs_raw"] and p50 < AIM["p50_ms"] and p99 < AIM["p99_ms"]
        )
    complete = raw["complete"] and all(result["complete"] for result in pipeline.values())
    summary["complete"] = complete
    print(json.dumps(summary), flush=True)
    if not complete:
        sys.exit(1)


if __name__ == "__main__":
    main()
