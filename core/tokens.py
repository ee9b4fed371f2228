"""The one token signer (HMAC, key rotation: the first key signs, every key verifies)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.errors import Forbidden


class Signer:
    def __init__(self, keys: list[str], salt: str = "nurture") -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._serializer = URLSafeTimedSerializer(keys[::-1], salt=salt)

    def sign(self, data: Any) -> str:
        return self._serializer.dumps(data)

    def unsign(self, token: str, max_age: int | None = None) -> Any:
        try:
            return self._serializer.loads(token, max_age=max_age)
        except SignatureExpired:
            raise Forbidden("this link has expired", field="token") from None
        except BadSignature:
            raise Forbidden("this link is not valid", field="token") from None


def hmac_sha256(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
