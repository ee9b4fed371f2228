"""Short signed tokens that name one message (and one of its links): the open pixel, the click
redirect, the unsubscribe page and the bounce return path carry them.

A token is lower-case base32 of the message id (16 bytes), the link's number for clicks (2 bytes)
and an 80-bit HMAC-SHA256 tag over the purpose and those bytes. The purpose is in the tag, so an
open token is no unsubscribe token. The first signing key signs; every key verifies (rotation).
Base32 in one case survives a mail server that changes the case of a return path."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from typing import Literal

from core.errors import Forbidden

Purpose = Literal["open", "click", "unsubscribe", "bounce", "optin"]
TAG_BYTES = 10
MAX_LINKS = 65_535


class MessageTokens:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        # A key of its own for message tokens: a leaked token tag says nothing about other signatures.
        self._keys = [hmac.new(k.encode(), b"nurture message tokens", hashlib.sha256).digest() for k in keys]

    def make(self, purpose: Purpose, message_id: uuid.UUID, link: int | None = None) -> str:
        payload = message_id.bytes if link is None else message_id.bytes + _link_bytes(link)
        raw = payload + self._tag(self._keys[0], purpose, payload)
        return base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    def read(self, purpose: Purpose, token: str) -> tuple[uuid.UUID, int | None]:
        """The message id (and link number) in a token of this purpose; Forbidden when it is not one."""
        try:
            text = token.strip().upper()
            raw = base64.b32decode(text + "=" * (-len(text) % 8))
        except (binascii.Error, ValueError):
            raise Forbidden("this link is not valid", field="token") from None
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if len(payload) not in (16, 18) or not any(
            hmac.compare_digest(tag, self._tag(key, purpose, payload)) for key in self._keys
        ):
            raise Forbidden("this link is not valid", field="token")
        link = int.from_bytes(payload[16:], "big") if len(payload) == 18 else None
        return uuid.UUID(bytes=payload[:16]), link

    @staticmethod
    def _tag(key: bytes, purpose: str, payload: bytes) -> bytes:
        return hmac.new(key, purpose.encode() + b":" + payload, hashlib.sha256).digest()[:TAG_BYTES]


def _link_bytes(link: int) -> bytes:
    if not 0 <= link <= MAX_LINKS:
        raise ValueError(f"a link number is 0 to {MAX_LINKS}")
    return link.to_bytes(2, "big")
