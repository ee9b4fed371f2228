"""In-process sliding-window rate limits (e.g. posts per form and client IP), timed by core.clock.

Each API process keeps its own windows: a limit of N per minute is N per process, which is
enough to stop a bot hammering one form without a shared store on the request path.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from datetime import timedelta
from typing import Any

from core import clock
from core.errors import RateLimited


class SlidingWindow:
    """At most `limit` hits per key within any `window`."""

    def __init__(self, limit: int, window: timedelta = timedelta(minutes=1), max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window.total_seconds()
        self.max_keys = max_keys
        self._hits: dict[Hashable, deque[float]] = {}

    def hit(self, key: Hashable) -> float:
        """Count one request for `key`: 0 when allowed, else the seconds until one would be.

        A refused request is not counted, so a client that waits as told gets through.
        """
        now = clock.now().timestamp()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._prune(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= max(self.limit, 0):
            oldest = hits[0] if hits else now
            return max(oldest + self.window - now, 0.001)
        hits.append(now)
        return 0.0

    def check(self, key: Hashable, field: str = "ip") -> None:
        """Count one request, raising RateLimited (429, with the wait in `details`) when over."""
        wait = self.hit(key)
        if wait:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many requests; try again in {seconds} s", field=field,
                details={"retry_after": seconds},
            )

    def _prune(self, now: float) -> None:
        # Bound memory under a spray of addresses: forget idle keys, then the oldest half.
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:
            for key in list(self._hits)[: len(self._hits) // 2]:
                del self._hits[key]


def window_for(state: Any, name: str, limit: int) -> SlidingWindow:
    """The process's window called `name`, kept on app.state so each app (and test) has its own."""
    windows: dict[str, SlidingWindow] | None = getattr(state, "rate_windows", None)
    if windows is None:
        windows = {}
        state.rate_windows = windows
    window = windows.get(name)
    if window is None or window.limit != limit:
        window = windows[name] = SlidingWindow(limit)
    return window


def retry_after(exc: RateLimited) -> dict[str, str]:
    """The Retry-After header for a 429 raised by `check`."""
    details = exc.details if isinstance(exc.details, dict) else {}
    return {"retry-after": str(details.get("retry_after", 60))}
