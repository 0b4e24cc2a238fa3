"""The client's error tree: the service's error body (`{success, error, message, details}`) as exceptions.

One class per family of the contract's error kinds, each carrying the HTTP `status`, the `code` (the body's
`error`), the `message` and the `details`. `raise_for_body` is the one place a response becomes an error;
a body that is not the contract's (a proxy's HTML page, a connection failure) becomes an `ApiError` too, so a
caller catches one tree. No error ever carries a token: the request's headers are not kept.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Anything the client refuses before or without the service: bad configuration, no credentials."""


class NotLoggedIn(ClientError):
    """No token: neither `DEPLOYCTL_TOKEN` nor a stored login for the context."""


class ApiError(Exception):
    """An error answer of the service (or no answer at all: `status` 0)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})" if self.status else self.message


class ValidationFailed(ApiError):
    """400 `validation_error`: `details` names each bad field."""


class Unauthorized(ApiError):
    """401: no, a bad, an expired or a revoked credential."""


class Forbidden(ApiError):
    """403 `forbidden` or `quota_exceeded` (`details: {quota, limit, used}`)."""


class NotFound(ApiError):
    """404: no such resource, or it is someone else's."""


class Conflict(ApiError):
    """409 `conflict` (a duplicate name, a live deployment: `details.deployment_id`)."""


class InvalidState(ApiError):
    """`invalid_state` (409, or 400 for scale): the action is not allowed in the resource's status."""


class PayloadTooLarge(ApiError):
    """413: the request body is over the service's limit."""


class RateLimited(ApiError):
    """429: `retry_after` seconds (from `Retry-After`) before the next try."""

    retry_after: float | None = None


class Unavailable(ApiError):
    """502/503/504: the engine, the agent or the service cannot answer now (`engine_unavailable`,
    `no_ready_replica`, `agent_timeout`, `bad_gateway`)."""


class ServerError(ApiError):
    """500 `internal_error`, or another 5xx."""


class ConnectionFailed(ApiError):
    """The service could not be reached at all (status 0)."""


BY_CODE: dict[str, type[ApiError]] = {
    "validation_error": ValidationFailed,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "quota_exceeded": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "invalid_state": InvalidState,
    "payload_too_large": PayloadTooLarge,
    "rate_limited": RateLimited,
    "engine_unavailable": Unavailable,
    "no_ready_replica": Unavailable,
    "agent_timeout": Unavailable,
    "bad_gateway": Unavailable,
    "internal_error": ServerError,
}
BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from(status: int, body: Any, *, retry_after: str | None = None) -> ApiError:
    """The exception for an error answer: by the body's `error` code, else by the status."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body["error"]
        message = str(body.get("message") or code)
        details = body.get("details") if isinstance(body.get("details"), dict) else None
    else:
        code = "http_error"
        message = f"The service answered HTTP {status} without an error body."
        details = None
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    error = cls(status, code, message, details)
    if isinstance(error, RateLimited) and retry_after:
        try:
            error.retry_after = float(retry_after)
        except ValueError:
            error.retry_after = None
    return error
