"""Refusals of the auth layer, in the one exception tree (mapped in inferq.api.errors)."""

from __future__ import annotations

from inferq.errors import InferqError


class Unauthenticated(InferqError):
    """No credential, or one that is malformed, unknown, revoked or expired: 401."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(InferqError):
    """A valid credential without the scope the route needs: 403."""

    status_code = 403
    error_type = "permission_error"
    code = "insufficient_scope"


class RateLimited(InferqError):
    """A rate or concurrency limit: 429 with Retry-After (and the RateLimit headers)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
