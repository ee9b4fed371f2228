"""What an SMS provider is: the protocol every provider meets, reading a receipt through the provider
that sent the message, and the check of a URL in a provider's settings."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from channels.ledger import Outcome
from channels.sms.receipts import Receipt
from core.errors import Invalid


class SmsProvider(Protocol):
    """Who actually sends the text. Answers by the rules in channels.base; never raises for the
    provider's behaviour."""

    async def send(self, to: str, text: str, message_id: uuid.UUID) -> Outcome: ...

    def receipt(self, fields: Mapping[str, Any]) -> Receipt: ...

    async def close(self) -> None: ...


def parse_receipt(provider: SmsProvider, fields: Mapping[str, Any]) -> Receipt:
    """A delivery receipt as the provider that sent the message writes it (form fields or JSON)."""
    return provider.receipt(fields)


def check_url(url: Any, name: str) -> None:
    """Invalid, naming the setting `name`, unless `url` is an http(s) URL with a host."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("must be an http(s) URL", field=name)
