"""Fakes of the outside HTTP services nurture talks to (SMS gateways, Telegram, webhook receivers),
served through httpx.MockTransport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

# What the service does with a request: answer with this response, answer with what this function
# makes of the request, or fail the request on the way out with this transport error.
Answer = httpx.Response | type[httpx.TransportError] | Callable[[httpx.Request], httpx.Response]


class Remote:
    """The other side: keeps every request it receives and answers with what it was given."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    @classmethod
    def json(cls, status: int = 200, body: Any = None) -> Remote:
        """A service answering every request with a fresh JSON response."""
        return cls(lambda request: httpx.Response(status, json=body))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answer
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, type):
            # The URL in the message, as a careless library would put it (tokens in it must be scrubbed).
            raise answer(f"no answer from {request.url}", request=request)
        return answer(request)
