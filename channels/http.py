"""The outcome rules every HTTP-based channel follows (SMS providers, Telegram, webhooks): which
failures mean "not sent" (DEFERRED), which "maybe sent" (UNKNOWN), how a Retry-After is read, and
keeping secrets out of what is recorded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from channels.ledger import DEFERRED, FAILED, RETRY_CAP, UNKNOWN, Outcome
from core import clock

# Explicit, so a provider that stops answering holds a sender for seconds, not forever.
TIMEOUT = httpx.Timeout(connect=5.0, read=15.0, write=15.0, pool=5.0)

# A FAILED reason starting so means the recipient refuses this channel (replied STOP, blocked the bot):
# the caller suppresses the address instead of trying it again later.
BLOCKED = "blocked:"

# Raised before a byte of the request left: the other side cannot have acted on it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


def http_client(client: httpx.AsyncClient | None, transport: httpx.AsyncBaseTransport | None,
                ) -> tuple[httpx.AsyncClient, bool]:
    """The client an adapter sends with and whether the adapter owns it (and closes it): a client given
    is the caller's; otherwise one of our own with explicit timeouts, over `transport` when given."""
    if client is not None:
        return client, False
    return httpx.AsyncClient(timeout=TIMEOUT, transport=transport), True


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Text safe to record: every secret (a token, an auth header) replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    return text


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), at most the ledger's longest
    wait; None when absent or unreadable."""
    if not value or not (value := value.strip()):
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - clock.now()).total_seconds())
    return min(seconds, RETRY_CAP)


def transport_outcome(exc: httpx.TransportError, secrets: Iterable[str] = ()) -> Outcome:
    """A send that got no answer: DEFERRED when the request never left, UNKNOWN when it did."""
    said = scrub(f"{type(exc).__name__}: {exc}", secrets)[:1000]
    if isinstance(exc, _NOT_SENT):
        return Outcome(DEFERRED, response=said, reason="could not reach the provider; nothing was sent")
    return Outcome(UNKNOWN, response=said,
                   reason="the request went out and no answer came; it may have arrived, so it is not resent")


def answer(response: httpx.Response, secrets: Iterable[str] = ()) -> str:
    """The provider's answer as recorded: status and the start of the body."""
    return scrub(f"{response.status_code} {response.reason_phrase}: {response.text[:900]}", secrets)[:1000]


def refusal_outcome(status: int, said: str, detail: str, wait: float | None,
                    server_error: str = UNKNOWN) -> Outcome:
    """A non-2xx answer: 408/429 (and 503 that says when) are "not now"; other 3xx/4xx "never"; other
    5xx `server_error`: UNKNOWN unless the provider documents that a 5xx means nothing was sent."""
    if status in (408, 429) or (status == 503 and wait is not None):
        return Outcome(DEFERRED, response=said, retry_after=wait, reason=f"the provider said not now: {detail}")
    if status < 500:
        return Outcome(FAILED, response=said, reason=f"the provider refused the message: {detail}")
    if server_error == DEFERRED:
        return Outcome(DEFERRED, response=said, retry_after=wait, reason=f"the provider failed: {detail}")
    return Outcome(UNKNOWN, response=said,
                   reason=f"the provider failed after taking the request ({detail}); it may have sent it, not resent")


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path ("data.id", "messages.0.id"); a flat key named with dots is found
    first. None when any step is missing."""
    if isinstance(data, Mapping) and path in data:
        return data[path]
    for step in path.split("."):
        if isinstance(data, Mapping):
            data = data.get(step)
        elif isinstance(data, list) and step.isdigit() and int(step) < len(data):
            data = data[int(step)]
        else:
            return None
    return data
