"""Streamed calls to a deployed agent (`Accept: text/event-stream`): its answer passed on as it comes.

The call goes out as `interact`'s does (same replica choice, same passing over a replica that takes no
connection, `Accept: text/event-stream`). Then:

- a JSON answer (`application/json`, `+json`) is read, checked and returned as the JSON proxy does;
- any other answer (`text/event-stream`, chunked text) is relayed: each piece the agent's connection
  yields (`read1`: what has arrived, never waiting for a buffer to fill) goes to the client at once,
  so the service holds one piece at a time, never the whole answer, and no database connection
  (released before the call, as for JSON; the record is written once the stream ends).

A stream ends when the agent's answer ends, when the agent is silent for `INTERACT_TIMEOUT_SECONDS`
(recorded as a 504), when its connection breaks (502), after `INTERACT_STREAM_MAX_SECONDS` (the
socket's timeout is cut to what is left, so even a silent agent is cut off on time), or when the
client goes away: the WSGI server closes the response, and closing the relay closes the agent's
connection (it sees the disconnect) rather than returning it to the pool.

Each stream holds one of its worker's threads (gunicorn gthread: `GUNICORN_THREADS` per worker) for
its whole length. So that streams never take every thread of a worker, leaving nothing for other
calls and health checks, a worker relays at most `INTERACT_STREAMS_PER_WORKER` at once (a counter in
the process); one more is refused at once with 503 `streams_busy` and `Retry-After: 1`, before any
replica is called.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, current_app, has_app_context
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError
from urllib3.response import BaseHTTPResponse

from deploy_service.errors import AgentTimeout, AgentUnreachable, ServiceError, StreamsBusy
from deploy_service.services import invocations
from deploy_service.services.interact import Caller, Target, call_target, json_answer, release_database, send
from deploy_service.services.invocations import CallRecord
from deploy_service.settings import current_settings

CHUNK_BYTES = 64 * 1024
"""The most the relay reads at once; it passes on whatever has arrived, however little."""


class _StreamSlots:
    """The streams this process relays at the moment, against `INTERACT_STREAMS_PER_WORKER`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def take(self, limit: int) -> bool:
        with self._lock:
            if self.open >= limit:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1


SLOTS = _StreamSlots()


def is_json(content_type: str) -> bool:
    """Whether an answer of this `Content-Type` is JSON (passed through as JSON, not relayed)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _set_read_timeout(response: BaseHTTPResponse, seconds: float) -> None:
    """Make the agent's socket wait at most `seconds` for its next bytes."""
    connection: Any = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


class Relay:
    """The agent's streamed answer, piece by piece, and its record once it ends (however it ends).

    Iterate `chunks()` for the body; `close()` closes the agent's connection, records the call and gives
    the stream's slot back, once. The response's `call_on_close` calls it after the last piece went out
    (so the record's commit does not hold back the end of the stream), and a client that goes away
    (the iteration closed early) calls it at once.
    """

    def __init__(
        self,
        target: Target,
        index: int,
        response: BaseHTTPResponse,
        *,
        started: float,
        body: bytes,
        session_id: str | None,
    ) -> None:
        settings = current_settings().interact
        self.app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        self.target, self.index, self.response = target, index, response
        self.status = response.status
        self.content_type = response.headers.get("Content-Type") or "text/event-stream"
        self.started, self.body, self.session_id = started, body, session_id
        self.idle = settings.timeout
        self.stream_max = settings.stream_max
        self.deadline = time.monotonic() + settings.stream_max
        self.first_byte: float | None = None
        self.sent = 0
        self.error: str | None = None
        """`kind: message` of how the stream ended, when it did not end with the answer."""
        self.failed_status: int | None = None
        """502 or 504 when the agent failed mid-stream: what the record counts (the client had `status`)."""
        self.ended = False
        self._closed = False
        self._lock = threading.Lock()

    def chunks(self) -> Iterator[bytes]:
        """The answer's pieces as they arrive; ends with the answer, a failure or the time limit."""
        try:
            while True:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.error = (
                        f"stream_time_limit: the stream reached INTERACT_STREAM_MAX_SECONDS ({self.stream_max:g})"
                    )
                    return
                _set_read_timeout(self.response, min(self.idle, left))
                try:
                    chunk = self.response.read1(CHUNK_BYTES)
                except ReadTimeoutError:
                    if self.deadline - time.monotonic() > 0.001:
                        self._failed(AgentTimeout(f"The agent sent nothing for {self.idle:g} s mid-stream."))
                        return
                    continue  # the time limit: said on the next turn
                except (Urllib3Error, OSError) as exc:
                    self._failed(AgentUnreachable(f"The agent's connection failed mid-stream ({type(exc).__name__})."))
                    return
                if not chunk:
                    self.ended = True
                    return
                if self.first_byte is None:
                    self.first_byte = (time.perf_counter() - self.started) * 1000
                self.sent += len(chunk)
                yield chunk
        except BaseException:  # the client went away (GeneratorExit), or a defect: close at once
            self.close()
            raise

    def close(self) -> None:
        """Close the agent's connection (unless its answer ended: then it goes back to the pool), record, release."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.ended:
                self.response.release_conn()
            else:
                self.response.close()  # the agent sees its caller go
                if self.error is None:
                    self.error = "client_closed: the caller closed the stream before it ended"
            self._record()
        finally:
            SLOTS.give_back()

    def _failed(self, error: ServiceError) -> None:
        self.error = f"{error.kind}: {error.message}"
        self.failed_status = error.status_code

    def _record(self) -> None:
        call = CallRecord(
            agent_id=self.target.agent_id,
            deployment_id=self.target.deployment_id,
            replica=self.index,
            status_code=self.failed_status or self.status,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            session_id=self.session_id,
            streamed=True,
            first_byte_ms=self.first_byte,
            request_bytes=len(self.body),
            response_bytes=self.sent,
            error=self.error,
        )
        if has_app_context():
            invocations.record(call)
        else:
            with self.app.app_context():
                invocations.record(call)


def interact_stream(
    caller: Caller, agent_id: str, body: bytes, *, session_id: str | None = None
) -> tuple[int, Any] | Relay:
    """A streamed call: the agent's JSON answer as `(status, parsed)`, or a `Relay` of its streamed answer.

    Raises:
        NotFound, NoReadyReplica: see `interact.call_target`.
        StreamsBusy: this worker already relays `INTERACT_STREAMS_PER_WORKER` streams.
        AgentTimeout, AgentUnreachable: the agent was not reached, did not start answering in time, or
            its JSON answer is cut, not JSON or too large.
    """
    target = call_target(caller, agent_id, session_id=session_id)
    settings = current_settings().interact
    if not SLOTS.take(settings.streams_per_worker):
        raise StreamsBusy(limit=settings.streams_per_worker)
    relaying = False
    try:
        release_database()
        started = time.perf_counter()
        index, sent = send(target, body, accept="text/event-stream", settings=settings)
        if isinstance(sent, ServiceError) or is_json(sent.headers.get("Content-Type") or ""):
            return json_answer(target, index, sent, started=started, body=body, session_id=session_id, streamed=True)
        relay = Relay(target, index, sent, started=started, body=body, session_id=session_id)
        relaying = True
        return relay
    finally:
        if not relaying:
            SLOTS.give_back()
