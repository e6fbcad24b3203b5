"""The one error hierarchy of convscope; `error_body` renders any of them as the JSON error shape.

    ConvscopeError                 500 internal (never raised on purpose)
    ├── BadRequest                 400 malformed (JSON that does not parse, a bad multipart)
    ├── Unauthorized               401 no or unknown API key
    ├── Forbidden                  403 the caller may not do this to that resource
    ├── NotFound                   404 unknown id (or owned by another key)
    ├── NotReady                   409 the thing exists but is not ready yet
    ├── TooLarge                   413 over a byte or pixel limit
    ├── UnsupportedMedia           415 a file format or media type we do not read
    ├── Invalid                    422 values that parse but cannot be used
    ├── Overloaded                 429 queue or per-key quota full (Retry-After)
    └── Unavailable                503 a dependency (Redis, a model file) is down; retryable

Input errors (4xx) are never retried; `Unavailable` is.
"""

from __future__ import annotations

from typing import Any


class ConvscopeError(Exception):
    """Base: an error with an HTTP status, a stable snake_case code and a human sentence."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details
        self.retry_after = retry_after

    def body(self) -> dict:
        return error_body(self.code, self.message, self.details)


class BadRequest(ConvscopeError):
    status, code = 400, "bad_request"


class Unauthorized(ConvscopeError):
    status, code = 401, "unauthorized"


class Forbidden(ConvscopeError):
    status, code = 403, "forbidden"


class NotFound(ConvscopeError):
    status, code = 404, "not_found"


class NotReady(ConvscopeError):
    status, code = 409, "not_ready"


class TooLarge(ConvscopeError):
    status, code = 413, "too_large"


class UnsupportedMedia(ConvscopeError):
    status, code = 415, "unsupported_media_type"


class Invalid(ConvscopeError):
    status, code = 422, "invalid"


class Overloaded(ConvscopeError):
    status, code = 429, "overloaded"


class Unavailable(ConvscopeError):
    status, code = 503, "unavailable"


def error_body(code: str, message: str, details: Any = None) -> dict:
    """The JSON error shape every route answers with: `{"error": {"code", "message", "details"}}`."""
    return {"error": {"code": code, "message": message, "details": details}}
