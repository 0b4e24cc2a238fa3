"""What every module of the Docker backend shares about talking to the engine.

Three small facts, kept in one place so the runner, the image builder and the stream readers agree on them:

- which exceptions mean the engine could not be *reached* (as opposed to an engine that answered and
  refused): these become `EngineUnavailable` or, for a call past its deadline, a timeout of that call;
- how an engine refusal explains itself (`explanation`);
- how the engine writes times (RFC3339 with nanoseconds, and a zero time for "never"): `parse_engine_time`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import requests
import urllib3
from docker.errors import APIError

__all__ = ["UNREACHABLE", "explanation", "parse_engine_time"]

UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
"""Exceptions that mean the engine did not answer (refused connection, missing socket, timeout)."""

_ENGINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_engine_time(value: str | None) -> datetime | None:
    """An engine RFC3339Nano time as an aware UTC datetime (nanoseconds truncated); None for zero/unset."""
    match = _ENGINE_TIME.match(value or "")
    if match is None or match.group(1).startswith("0001-01-01"):
        return None
    seconds, fraction, zone = match.groups()
    iso = f"{seconds}.{(fraction or '0')[:6].ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}"
    return datetime.fromisoformat(iso).astimezone(UTC)


def explanation(exc: APIError) -> str:
    """The engine's own explanation of a refusal, or the error itself when it gave none."""
    return str(exc.explanation or exc)
