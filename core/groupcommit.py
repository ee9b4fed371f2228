"""Group commit for intake: each caller still hears back only after the transaction holding its
item has committed, but the items that arrive while one transaction is being written share the
next one.

One item alone costs a handful of statements and a commit; under load, a hundred items cost about
the same number of set-based statements and one commit, so intake keeps up with a spike instead
of queueing behind the database. With no load a batch is one item and nothing waits.

A batch that fails as a whole (a unique key won by another process, a value the database refuses,
one bad item) is not retried as a whole: every item in it is then written on its own, so one bad
item fails alone and the others are still written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database, locked_transaction
from core.logging import get_logger
from core.metrics import INTAKE_BATCH, INTAKE_BATCH_SECONDS

Item = TypeVar("Item")
Result = TypeVar("Result")

log = get_logger("nurture.intake")


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    done: asyncio.Future[Result] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit(Generic[Item, Result]):
    """Collects one process's items of one kind and writes them in as few transactions as the
    load allows: `many` writes a batch in the caller's session (results in order), `one` writes
    a single item (the fallback); neither commits."""

    def __init__(self, db: Database, channel: str,
                 many: Callable[[AsyncSession, list[Item]], Awaitable[list[Result]]],
                 one: Callable[[AsyncSession, Item], Awaitable[Result]],
                 max_batch: int = 100, writers: int = 2,
                 written: Callable[[list[Result]], None] | None = None,
                 locks: Callable[[list[Item]], Iterable[str]] | None = None, planned_once: bool = False) -> None:
        self.db = db
        self.planned_once = planned_once  # `many` suits any plan (core.db.locked_transaction)
        self.locks = locks  # the identities a batch works on, locked from its first round trip
        self.written = written  # told each batch's results once committed (metrics)
        self.channel = channel
        self.many = many
        self.one = one
        self.max_batch = max_batch
        # Transactions in flight at once: one is written while the next gathers. SQLite lets one
        # transaction write at a time, so there a second writer would only wait for the file lock in
        # SQLite's busy handler, which sleeps in growing steps of up to 100 ms: form posts at 730/s
        # were answered with a p99 of 124-202 ms instead of 17-26 ms.
        self.writers = 1 if db.sqlite else writers
        self.queue: list[_Waiting[Item, Result]] = []
        self.running: set[asyncio.Task[None]] = set()
        # Writers started and not yet past their last look at the queue. Counted down by the writer
        # itself in the same step as that look, not by a task callback a turn later: an item queued in
        # between would otherwise find every writer slot taken and wait for the next item to start one.
        self.active = 0

    async def write(self, item: Item) -> Result:
        """Write the item; returns once it is committed (raises what writing it alone raises)."""
        waiting: _Waiting[Item, Result] = _Waiting(item)
        self.queue.append(waiting)
        if self.active < self.writers:
            self.active += 1
            writer = asyncio.create_task(self._write_queue())
            self.running.add(writer)
            writer.add_done_callback(self.running.discard)
        # A client that hangs up cancels only this wait: the writer holds the item and writes it with
        # the others, and settling passes over a wait that was cancelled. (No shield: it would cost
        # each post a future and a turn of the loop.)
        return await waiting.done

    async def close(self) -> None:
        """Wait for the items already accepted (on shutdown)."""
        await asyncio.gather(*self.running, return_exceptions=True)

    async def _write_queue(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch:]
                try:
                    await self._write_batch(batch)
                except Exception as exc:  # noqa: BLE001 - each item then succeeds or fails on its own
                    if len(batch) > 1:
                        log.info("batch failed; writing its items one by one", channel=self.channel,
                                 items=len(batch), error=repr(exc))
                    for waiting in batch:
                        await self._write_alone(waiting)
        finally:
            self.active -= 1

    async def _write_batch(self, batch: list[_Waiting[Item, Result]]) -> None:
        started = time.perf_counter()
        items = [w.item for w in batch]
        locks = self.locks(items) if self.locks else ()
        async with self.db.group_write(), self.db.sessions() as session, locked_transaction(
            session, locks, self.planned_once
        ):
            results = await self.many(session, items)
        INTAKE_BATCH.labels(self.channel).observe(len(batch))
        INTAKE_BATCH_SECONDS.labels(self.channel).observe(time.perf_counter() - started)
        if self.written is not None:
            self.written(results)
        for waiting, result in zip(batch, results, strict=True):
            _settle(waiting, result)

    async def _write_alone(self, waiting: _Waiting[Item, Result]) -> None:
        for attempt in range(2):
            try:
                async with self.db.group_write(), self.db.sessions() as session:
                    result = await self.one(session, waiting.item)
                    await session.commit()
                _settle(waiting, result)
                return
            except IntegrityError as exc:
                if attempt:  # a concurrent writer created the same person first; the retry finds them
                    _settle(waiting, exc)
            except Exception as exc:  # noqa: BLE001 - handed to the caller that waits for it
                _settle(waiting, exc)
                return


def _settle(waiting: _Waiting[Item, Result], outcome: Result | BaseException) -> None:
    if waiting.done.done():
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)
