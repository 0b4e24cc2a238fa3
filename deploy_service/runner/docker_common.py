"""What every module of the Docker backend shares about talking to the engine.

Small facts, kept in one place so the runner, the image builder and the stream readers agree on them:

- which exceptions mean the engine could not be *reached* (as opposed to an engine that answered and
  refused): these become `EngineUnavailable` or, for a call past its deadline, a timeout of that call;
- how an engine refusal explains itself (`explanation`);
- how the engine writes times (RFC3339 with nanoseconds, and a zero time for "never"): `parse_engine_time`;
  and its clock as it answers (`engine_date`, for asking its events "since" without trusting ours);
- how to open an endpoint the SDK has no suitable method for (`open_stream`): the log streams, whose
  frames must keep their stream id (the SDK's `logs` drops it, docker/docker-py#3253) and a task's logs
  (the SDK has none). It uses only the client's public face: it is a `requests.Session` whose
  `base_url`, `api_version` and `timeout` say where and how long, and `docker.errors` turns a refusal
  into the SDK's own `APIError`/`NotFound`, as the SDK's methods do.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import paramiko
import requests
import urllib3
from docker.errors import APIError, create_api_error_from_http_exception

__all__ = ["UNREACHABLE", "engine_date", "explanation", "open_stream", "parse_engine_time"]

UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    paramiko.SSHException,
)
"""Exceptions that mean the engine did not answer (refused connection, missing socket, timeout, and over
SSH a connection that died or a channel sshd refused, e.g. past its `MaxSessions`)."""

_ENGINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_engine_time(value: str | None) -> datetime | None:
    """An engine RFC3339Nano time as an aware UTC datetime (nanoseconds truncated); None for zero/unset."""
    match = _ENGINE_TIME.match(value or "")
    if match is None or match.group(1).startswith("0001-01-01"):
        return None
    seconds, fraction, zone = match.groups()
    iso = f"{seconds}.{(fraction or '0')[:6].ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}"
    return datetime.fromisoformat(iso).astimezone(UTC)


def engine_date(response: requests.Response) -> int | None:
    """The engine's clock when it answered (its HTTP `Date` header, whole seconds since the epoch); None if absent."""
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError):
        return None


def explanation(exc: APIError) -> str:
    """The engine's own explanation of a refusal, or the error itself when it gave none."""
    return str(exc.explanation or exc)


def open_stream(api: Any, path: str, ident: str, *, params: dict[str, Any]) -> requests.Response:
    """GET the engine endpoint `path` (e.g. `/containers/{0}/logs`) of `ident` as an open, streamed response.

    Args:
        api: the runner's low-level client (`docker.APIClient`).
        path: the endpoint below the API version, `{0}` standing for `ident` (quoted as the SDK quotes it).
        ident: a container or task id or name.
        params: the query.

    Raises:
        docker.errors.APIError: the engine refused (`docker.errors.NotFound` for a 404); the response is closed.
    """
    url = f"{api.base_url}/v{api.api_version}{path.format(quote(ident, safe='/:'))}"
    response: requests.Response = api.get(url, params=params, stream=True, timeout=api.timeout)
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        try:
            error = create_api_error_from_http_exception(exc)  # reads the engine's explanation; it raises
        finally:
            response.close()
        raise error from exc
    return response
