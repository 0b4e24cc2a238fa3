"""The service's error tree, and the one place that turns errors into the contract's JSON body.

Domain code raises a `ServiceError` subclass anywhere (services, schemas); Werkzeug's HTTP errors
(unknown route, wrong method, body too large, malformed JSON from webargs) and unexpected
exceptions are mapped here too, so every response that is not a success has the same shape:
`{"success": false, "error": kind, "message": sentence, "details": {...}}`.

The runner knows nothing of the service, so it raises its own errors (`runner.errors`); they are
given their meaning here too: the runner's `EngineUnavailable` (re-exported from this module, so
the service's code imports it from here) is a 503 `engine_unavailable` (`as_service_error`), and a
setting a runner backend refuses is a `ConfigError` at startup (`runner_settings_checked`). Any
other runner error that reaches a request is an unexpected 500, as before.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from deploy_service.extensions import db
from deploy_service.runner.errors import EngineUnavailable, RunnerConfigError
from deploy_service.settings import ConfigError

__all__ = [
    "AgentTimeout",
    "AgentUnreachable",
    "ConfigError",
    "Conflict",
    "EngineUnavailable",
    "EngineUnreachable",
    "Forbidden",
    "InvalidState",
    "NoReadyReplica",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "ServiceError",
    "StreamsBusy",
    "Unauthorized",
    "ValidationFailed",
    "as_service_error",
    "error_response",
    "http_exception_response",
    "log_unexpected",
    "register_error_handlers",
    "runner_settings_checked",
]

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error that reaches a client as a contract error body."""

    status_code = 500
    kind = "internal_error"
    default_message = "An internal error occurred."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Mapping[str, Any] | None = None,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = dict(details) if details else None
        if status_code is not None:
            self.status_code = status_code
        self.headers = dict(headers) if headers else {}
        super().__init__(self.message)


class ValidationFailed(ServiceError):
    status_code = 400
    kind = "validation_error"
    default_message = "The request is invalid."


class Unauthorized(ServiceError):
    status_code = 401
    kind = "unauthorized"
    default_message = "Authentication is required."


class Forbidden(ServiceError):
    status_code = 403
    kind = "forbidden"
    default_message = "You are not allowed to do this."


class QuotaExceeded(ServiceError):
    """A per-user quota (`QUOTA_*`) would be passed; `details` is `{quota, limit, used}`."""

    status_code = 403
    kind = "quota_exceeded"
    default_message = "This would exceed your quota."


class NotFound(ServiceError):
    status_code = 404
    kind = "not_found"
    default_message = "The resource was not found."


class Conflict(ServiceError):
    status_code = 409
    kind = "conflict"
    default_message = "The request conflicts with the current state."


class InvalidState(ServiceError):
    status_code = 409
    kind = "invalid_state"
    default_message = "The resource is not in a state that allows this."


class PayloadTooLarge(ServiceError):
    status_code = 413
    kind = "payload_too_large"
    default_message = "The request body is too large."


class RateLimited(ServiceError):
    """A limit of the caller's that the service counts itself (the rate limiter answers its own 429s)."""

    status_code = 429
    kind = "rate_limited"
    default_message = "Too many requests; retry later."

    def __init__(self, message: str | None = None, *, retry_after: float) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class NoReadyReplica(ServiceError):
    status_code = 503
    kind = "no_ready_replica"
    default_message = "The agent has no ready replica."


class StreamsBusy(ServiceError):
    """This worker already serves `INTERACT_STREAMS_PER_WORKER` streamed calls (each holds one of its threads)."""

    status_code = 503
    kind = "streams_busy"
    default_message = "This worker serves as many streamed calls as it may; retry in a moment."

    def __init__(self, message: str | None = None, *, limit: int) -> None:
        super().__init__(message, details={"limit": limit}, headers={"Retry-After": "1"})


class AgentTimeout(ServiceError):
    status_code = 504
    kind = "agent_timeout"
    default_message = "The agent did not answer in time."


class AgentUnreachable(ServiceError):
    status_code = 502
    kind = "bad_gateway"
    default_message = "The agent could not be reached."


class EngineUnreachable(ServiceError):
    """What a client is told when the runner raises `EngineUnavailable` (see `as_service_error`)."""

    status_code = 503
    kind = "engine_unavailable"
    default_message = "The container engine cannot be reached."


def as_service_error(error: EngineUnavailable) -> ServiceError:
    """The contract error of the runner's `EngineUnavailable`: 503 `engine_unavailable`, with its message."""
    return EngineUnreachable(error.message)


@contextmanager
def runner_settings_checked() -> Iterator[None]:
    """At startup, a setting the runner refuses (`RunnerConfigError`) is the service's `ConfigError`.

    Raises:
        ConfigError: with the runner's message; the service must not start.
    """
    try:
        yield
    except RunnerConfigError as exc:
        raise ConfigError(exc.message) from exc


# Werkzeug / webargs HTTP errors mapped onto the contract's kinds.
_HTTP_KINDS = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}
_HTTP_MESSAGES = {
    400: "The request is invalid.",
    404: "The requested URL was not found.",
    405: "The method is not allowed for this URL.",
    413: "The request body is too large.",
    500: "An internal error occurred.",
}


def error_response(
    status: int,
    kind: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build the contract's error body with `status`."""
    body: dict[str, Any] = {"success": False, "error": kind, "message": message}
    if details:
        body["details"] = dict(details)
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten_webargs_messages(messages: Any) -> dict[str, Any]:
    """webargs nests errors by location (`{"json": {"name": [...]}}`); clients want field names.

    A location-wide error (e.g. malformed JSON) stays under its location's name (`json`, `query`).
    """
    if not isinstance(messages, Mapping):
        return {"request": messages}
    flat: dict[str, Any] = {}
    for location, errors in messages.items():
        if isinstance(errors, Mapping):
            flat.update(errors)
        else:
            flat[location] = errors
    return flat


def _validation_message(details: Mapping[str, Any]) -> str:
    if list(details) == ["json"]:
        errors = details["json"]
        return str(errors[0]) if isinstance(errors, list) and errors else "The JSON body is invalid."
    return f"Invalid input in: {', '.join(sorted(details))}."


def http_exception_response(error: HTTPException) -> Response:
    """Map a Werkzeug HTTPException (possibly raised by webargs with `data`) to the contract body."""
    status = error.code or 500
    kind = _HTTP_KINDS.get(status, "error")
    data = getattr(error, "data", None) or {}
    details = None
    message = data.get("message") if isinstance(data, Mapping) else None
    if isinstance(data, Mapping) and "messages" in data:
        details = _flatten_webargs_messages(data["messages"])
        message = message or _validation_message(details)
        status, kind = 400, "validation_error"
    if not message:
        message = _HTTP_MESSAGES.get(status) or (error.description or error.name)
    headers = {
        name: value for name, value in error.get_headers() if name.lower() not in {"content-type", "content-length"}
    }
    extra_headers = data.get("headers") if isinstance(data, Mapping) else None
    if extra_headers:
        headers.update(extra_headers)
    return error_response(status, kind, str(message), details, headers)


def register_error_handlers(app: Flask) -> None:
    """Install the handlers that give every failure the contract's body.

    Called after the extensions are bound, so these replace flask-smorest's default handler.
    """

    @app.errorhandler(ServiceError)
    def _service_error(error: ServiceError) -> Response:
        if error.status_code >= 500:
            db.session.rollback()
        return error_response(error.status_code, error.kind, error.message, error.details, error.headers)

    @app.errorhandler(EngineUnavailable)
    def _engine_unavailable(error: EngineUnavailable) -> Response:
        return _service_error(as_service_error(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        if (error.code or 500) >= 500:
            db.session.rollback()
        return http_exception_response(error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        db.session.rollback()
        log_unexpected(error)
        return error_response(500, "internal_error", "An internal error occurred.")


def log_unexpected(error: Exception) -> None:
    """Log an unexpected error with its traceback, but never a database driver's message.

    The driver's message can quote the row it refused (PostgreSQL: `DETAIL: Key (key_hash)=(...)
    already exists`), so a database error is logged by its class, SQLSTATE, statement (without
    parameters) and stack only.
    """
    if isinstance(error, DBAPIError):
        original = error.orig
        code = getattr(original, "sqlstate", None) or getattr(original, "sqlite_errorname", None)
        log.error(
            "unhandled database error: %s (%s) in %s\n%s",
            type(original).__name__,
            code,
            error.statement,
            "".join(traceback.format_tb(error.__traceback__)),
        )
    else:
        log.exception("unhandled error: %s", type(error).__name__)
