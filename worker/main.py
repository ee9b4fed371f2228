"""`nurture worker`: the arq worker with the relay, the sweeper, the message sender and a heartbeat
beside it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterable
from typing import Any

from arq import Worker as ArqWorker
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import func

from channels.setup import build_sender
from core.db import Database
from core.events import Handler, Sweep
from core.logging import get_logger
from core.outbox import RedisNudge, set_nudge
from core.retry import wait_or_stop
from core.settings import Settings, get_settings, use_settings
from worker.dispatch import DISPATCH_JOB, Dispatcher, dispatch_job
from worker.registry import Registry, load_registry
from worker.relay import Relay
from worker.sweeper import sweep

log = get_logger("worker")
QUEUE = "nurture:queue"
HEARTBEAT_PREFIX = "nurture:worker:"
HEARTBEAT_SECONDS = 5
SEND_GRACE_SECONDS = 30.0  # how long a stopping worker lets its sender finish the pass it is in
POLL_SECONDS = 0.02  # how often a worker looks for jobs it was not woken for (another relay queued them)


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


async def queue_pool(url: str) -> ArqRedis:
    return await create_pool(redis_settings(url), default_queue_name=QUEUE)


def lease_seconds(settings: Settings) -> float:
    """How long a relayed event may stay undone before the sweeper calls it lost."""
    return settings.job_timeout + 10 + settings.sweep_seconds


class Worker(ArqWorker):
    """arq's worker, woken as soon as the relay in its own process has queued jobs instead of at
    its next poll (arq polls every `poll_delay`; a wake-up saves half a poll on average, and at
    1,000 events/s bench/pipeline.py measured a lower p50 with it than with arq's poll alone).
    arq has no public seam for that wake-up, so `main` is a copy of arq's Worker.main using its
    private members: pyproject.toml pins arq to the release it was copied from, and
    tests/core/test_arq_seam.py fails, saying what to re-check, when that code or those members change."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wakeup = asyncio.Event()
        self.stopped_by: signal.Signals | None = None

    def wake(self) -> None:
        self.wakeup.set()

    # On SIGINT/SIGTERM arq lets the running jobs finish (or their time run out), then cancels its
    # main task: that cancellation is the normal end, not an error (see run_worker).
    def handle_sig(self, signum: signal.Signals) -> None:
        self.stopped_by = signal.Signals(signum)
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        self.stopped_by = signal.Signals(signum)
        super().handle_sig_wait_for_completion(signum)

    async def main(self) -> None:  # arq 0.28's Worker.main with a wakeable wait, no burst mode
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings, job_deserializer=self.job_deserializer, job_serializer=self.job_serializer,
                default_queue_name=self.queue_name, expires_extra_ms=self.expires_extra_ms,
            )
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        while True:
            self.wakeup.clear()
            await self._poll_iteration()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.poll_delay_s)


class Background:
    """The loops a worker runs beside its jobs: relay, sweeper, message sender, heartbeat."""

    def __init__(self, settings: Settings, db: Database, queue: ArqRedis, registry: Registry,
                 worker: ArqWorker | None = None) -> None:
        self.settings = settings
        self.db = db
        self.queue = queue
        self.registry = registry
        self.worker = worker
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        wake = worker.wake if isinstance(worker, Worker) else None
        self.relay = Relay(db, queue, registry, per_job=settings.events_per_job, on_queued=wake, name=self.worker_id)
        self.sender = build_sender(db, settings)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.sending: asyncio.Task[None] | None = None
        self.started = time.time()

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.relay.run(self.settings.outbox_poll_seconds, self.stop)),
            asyncio.create_task(self._sweep_loop()),
            asyncio.create_task(self._heartbeat_loop()),
        ]
        self.sending = asyncio.create_task(self.sender.run(self.stop, self.settings.send_poll_seconds))

    async def close(self) -> None:
        self.stop.set()
        if self.sending is not None:
            # A pass in flight is let finish: cut off, its messages would be left `unknown`.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.sending), SEND_GRACE_SECONDS)
            self.sending.cancel()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.sender.close()
        with contextlib.suppress(Exception):
            await self.queue.delete(HEARTBEAT_PREFIX + self.worker_id)

    async def _sweep_loop(self) -> None:
        while not self.stop.is_set():
            await wait_or_stop(self.stop, self.settings.sweep_seconds)
            try:
                swept = await sweep(self.db, lease_seconds(self.settings), self.registry)
                if swept.events:
                    log.warning("sweeper found lost events", events=swept.events)
                if swept.work:
                    log.info("sweeps found due work", **swept.work)
            except Exception as exc:
                log.warning("sweep failed", error=repr(exc))

    async def _heartbeat_loop(self) -> None:
        while not self.stop.is_set():
            worker = self.worker
            beat = {
                "id": self.worker_id, "pid": os.getpid(), "host": socket.gethostname(), "started": self.started,
                "seen": time.time(), "running": len(worker.tasks) if worker else 0,
                "complete": worker.jobs_complete if worker else 0, "failed": worker.jobs_failed if worker else 0,
            }
            with contextlib.suppress(Exception):
                await self.queue.set(HEARTBEAT_PREFIX + self.worker_id, json.dumps(beat), ex=HEARTBEAT_SECONDS * 3)
            await wait_or_stop(self.stop, HEARTBEAT_SECONDS)


async def start(ctx: dict[str, Any], settings: Settings, db: Database, registry: Registry,
                worker: ArqWorker | None = None) -> Background:
    """Worker start-up: the dispatcher for the jobs, and the relay, sweeper and heartbeat loops."""
    use_settings(settings)
    ctx["dispatcher"] = Dispatcher(db, registry, settings.job_max_tries, settings.job_retry_seconds)
    queue: ArqRedis = ctx["redis"]
    set_nudge(RedisNudge(queue))  # events a handler emits wake the relay too
    background = Background(settings, db, queue, registry, worker)
    background.start()
    log.info("worker started", id=background.worker_id, handlers=sorted(registry.by_name))
    return background


async def stop(ctx: dict[str, Any]) -> None:
    if (background := ctx.pop("background", None)) is not None:
        await background.close()
    set_nudge(None)


def build_worker(settings: Settings, db: Database, redis_url: str, extra: Iterable[Handler | Sweep] = (),
                 handle_signals: bool = True) -> Worker:
    """An arq Worker for events.dispatch; its startup starts the relay, sweeper and heartbeat."""
    registry = load_registry(extra)

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["background"] = await start(ctx, settings, db, registry, worker)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await stop(ctx)

    worker = Worker(
        functions=[func(dispatch_job, name=DISPATCH_JOB)],  # type: ignore[arg-type]
        queue_name=QUEUE,
        redis_settings=redis_settings(redis_url),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        max_jobs=settings.worker_concurrency,
        job_timeout=settings.job_timeout,
        # the dispatcher counts tries and writes dead letters itself; arq's limit only stops a job
        # that kills its worker every time
        max_tries=settings.job_max_tries + 5,
        keep_result=0,
        poll_delay=POLL_SECONDS,
        handle_signals=handle_signals,
        job_completion_wait=settings.job_timeout if handle_signals else 0,
    )
    return worker


async def finish_jobs(worker: Worker, seconds: float) -> None:
    """Graceful stop: take no new job, give the running ones `seconds` to finish; what is still
    running then is cancelled (its transaction rolls back) and arq queues it again."""
    worker.allow_pick_jobs = False
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=seconds)
    with contextlib.suppress(Exception):
        await worker.close()


async def run_worker(settings: Settings, redis_url: str, extra: Iterable[Handler | Sweep] = ()) -> None:
    db = Database(settings.resolved_database_url(), settings.db_pool_size)
    worker = build_worker(settings, db, redis_url, extra)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        if worker.stopped_by is None:
            raise
        log.info("worker stopped", signal=worker.stopped_by.name, complete=worker.jobs_complete)
    finally:
        with contextlib.suppress(Exception):
            await worker.close()
        await db.dispose()


class WorkerSettings:
    """For `arq worker.main.WorkerSettings`; `nurture worker` is the usual way in (it also starts
    the embedded Redis when NURTURE_REDIS_URL is empty)."""

    functions = [func(dispatch_job, name=DISPATCH_JOB)]
    queue_name = QUEUE
    redis_settings = redis_settings(get_settings().redis_url or "redis://127.0.0.1:6379")

    @staticmethod
    async def on_startup(ctx: dict[str, Any]) -> None:
        settings = get_settings()
        ctx["db"] = Database(settings.resolved_database_url(), settings.db_pool_size)
        ctx["background"] = await start(ctx, settings, ctx["db"], load_registry())

    @staticmethod
    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await stop(ctx)
        await ctx["db"].dispose()
