"""How long to wait before trying again: shared by event handlers and message sends."""

from __future__ import annotations

import asyncio
import contextlib
import random


def backoff(attempt: int, base: float, cap: float = 600.0) -> float:
    """Seconds before try `attempt + 1`: doubling from `base`, capped, with ±50% jitter so the
    retries of a burst of failures do not arrive together."""
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
