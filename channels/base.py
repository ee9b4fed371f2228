"""What every channel adapter is: given one message ready to go (`Delivery`), deliver it and say what
that came to (`channels.ledger.Outcome`). The sender does the rest (claiming the ledger row, suppression
and pacing, rendering, recording the outcome), so an adapter is only the conversation with the other side.

How an adapter answers, the same for every channel:
- SENT: the other side took the message (with its id in `provider_id` when it gives one);
- DEFERRED: a definite "not now" before the other side took it (SMTP 4xx, HTTP 429/503 with nothing
  accepted, a connection that failed before the request was sent); `retry_after` when it said how long;
- FAILED: a definite "never" (SMTP 5xx, HTTP 4xx other than 408/429, an address the channel refuses);
- UNKNOWN: the request went out and no answer came (a read timeout, a dropped connection after the
  body was sent): the message may have arrived, so it is never resent on its own.
An adapter never raises for the other side's behaviour; it raises only for its own bugs (which the
sender records as UNKNOWN)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.ledger import Outcome


@dataclass(frozen=True)
class Delivery:
    """One message as the adapter sends it. Which fields matter depends on the channel:
    email: `raw` (signed RFC 5322 bytes) and `envelope_from`; sms and messenger: `text`;
    webhook: `data` (the JSON body); postal: `text` and `data` (the postal address)."""

    message_id: uuid.UUID
    recipient: str  # address, E.164 phone, URL, chat id
    kind: str = "marketing"  # marketing | transactional
    text: str = ""
    subject: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""
    envelope_from: str = ""


class Channel(Protocol):
    """A channel adapter. Adapters are long-lived (they keep connections); `close` ends them."""

    name: str  # email | sms | webhook | messenger | postal

    async def deliver(self, delivery: Delivery) -> Outcome: ...

    async def close(self) -> None: ...
