"""One error family, mapped to HTTP once: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

from typing import Any


class NurtureError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class Invalid(NurtureError):
    status = 422
    code = "invalid"


class NotFound(NurtureError):
    status = 404
    code = "not_found"


class Conflict(NurtureError):
    status = 409
    code = "conflict"


class Forbidden(NurtureError):
    status = 403
    code = "forbidden"


class Unauthorized(NurtureError):
    status = 401
    code = "unauthorized"


class TooLarge(NurtureError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(NurtureError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(NurtureError):
    status = 429
    code = "rate_limited"
