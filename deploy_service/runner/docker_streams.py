"""Reading the engine's long responses: framed log streams, and pull/build streams bounded by a deadline.

- Logs are read from the low-level endpoint and demultiplexed here (`log_lines`): the SDK's streaming
  helpers drop the stream id of each frame, and the caller wants to know stdout from stderr. Each
  stream's frames are assembled into whole lines separately, keeping the engine timestamp of the frame
  that started the line; a partial line at the end of the stream is still reported. A line longer than
  `log_line_max_bytes` is handed on in pieces of at most that size as it comes (`runner.lines`), and a
  frame is read in pieces of that size too, so a container printing without newlines (or a frame
  header announcing gigabytes) never makes the reader hold more than about twice that.
- Long streaming calls (pull, build) get a short-lived client of their own (`DeadlineClient`), whose
  every socket read is bounded by the call's deadline; closing it cancels the work in the engine and
  never disturbs the runner's shared connection pool. `abort()` ends its open response from another
  thread (a cancelled build), waking a read that waits for the engine.
- Build output arrives in chunks that may end mid-line; `OutputLines` hands whole lines to the caller
  (a longer one than the cap in pieces) and keeps the last ones for the error of a failed build.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import requests

from deploy_service.runner.base import LogLine
from deploy_service.runner.docker_client import engine_client
from deploy_service.runner.docker_common import parse_engine_time
from deploy_service.runner.lines import cut_at, split_bytes, split_text
from deploy_service.runner.settings import RunnerSettings

__all__ = ["BUILD_LOG_TAIL_LINES", "DeadlineClient", "OutputLines", "log_lines", "set_read_timeout", "shut_down"]

BUILD_LOG_TAIL_LINES = 100

_LOG_TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ")
_STREAMS = {1: "stdout", 2: "stderr"}


def _sockets(response: requests.Response) -> list[Any]:
    """The socket (and, for a wrapped one, the socket inside) a streamed response reads from, where reachable."""
    stream: Any = response.raw
    try:
        raw = stream._fp.fp.raw
    except AttributeError:
        return []
    return [sock for sock in (raw, getattr(raw, "_sock", None)) if sock is not None]


def set_read_timeout(response: requests.Response, seconds: float | None) -> None:
    """Bound (or, with None, unbound) further socket reads of a streamed response, where reachable."""
    for sock in _sockets(response):
        if hasattr(sock, "settimeout"):
            sock.settimeout(seconds)


def shut_down(response: requests.Response) -> None:
    """End a streamed response from another thread: a read blocked on its socket returns at once."""
    for sock in _sockets(response):
        if hasattr(sock, "shutdown"):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class DeadlineClient:
    """A one-off API client for a single long streaming call that must end by a deadline.

    Every request it sends is bounded by the time left (the SDK sends pulls and builds with no
    timeout), and `tighten()` re-bounds the open response's socket as the deadline nears, so no read
    can block past it. Closing it drops the connection, which makes the engine cancel the work.
    """

    def __init__(self, settings: RunnerSettings, version: str, deadline: float) -> None:
        """Connect to the engine as the runner does (`engine_client`), speaking API `version`.

        Raises:
            EngineUnavailable: the engine cannot be reached.
        """
        self.deadline = deadline
        self.client = engine_client(settings, version=version, timeout=max(self.remaining(), 1.0), max_pool_size=1)
        self.api = self.client.api
        self._responses: list[requests.Response] = []
        send = self.api.send

        def bounded_send(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            kwargs["timeout"] = max(self.remaining(), 0.01)
            response: requests.Response = send(request, **kwargs)
            return response

        self.api.send = bounded_send
        self.api.hooks["response"].append(self._capture)

    def _capture(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._responses.append(response)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def tighten(self) -> None:
        for response in self._responses:
            set_read_timeout(response, max(self.remaining(), 0.01))

    def abort(self) -> None:
        """End the open response now, from any thread (a cancelled build); `close` still follows."""
        for response in list(self._responses):
            shut_down(response)

    def close(self) -> None:
        for response in self._responses:
            response.close()
        self.client.close()


class OutputLines:
    """Build output as whole lines for `on_output` (a chunk may end mid-line); the last ones kept for errors.

    A line over `max_bytes` is handed on in pieces of at most that size, as soon as a piece is complete.
    """

    def __init__(self, on_output: Callable[[str], None], *, max_bytes: int) -> None:
        self.on_output = on_output
        self.max_bytes = max_bytes
        self.partial = ""
        self.tail: deque[str] = deque(maxlen=BUILD_LOG_TAIL_LINES)

    def line(self, text: str) -> None:
        self.flush()
        self._emit(text)

    def feed(self, text: str) -> None:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self._emit(line.removesuffix("\r"))
        if len(self.partial) * 4 > self.max_bytes:  # it may be over the cap in UTF-8: cut its whole pieces
            *pieces, self.partial = split_text(self.partial, self.max_bytes)
            for piece in pieces:
                self._emit(piece)

    def flush(self) -> None:
        if self.partial:
            partial, self.partial = self.partial, ""
            self._emit(partial)

    def log(self) -> str:
        self.flush()
        return "\n".join(self.tail)

    def _emit(self, text: str) -> None:
        for piece in split_text(text, self.max_bytes):
            self.tail.append(piece)
            self.on_output(piece)


class _LineAssembler:
    """Turns the timestamped frames of one stream into lines of at most `max_bytes`.

    A partial line is kept until completed, or until it holds more than `max_bytes`: then its whole
    pieces go on, the rest is kept (so it never holds more than `max_bytes` between feeds).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.pending = b""
        self.timestamp: datetime | None = None
        self.open = False

    def feed(self, data: bytes, *, starts_frame: bool) -> Iterator[tuple[datetime | None, bytes]]:
        stamp = None
        match = _LOG_TIMESTAMP.match(data) if starts_frame else None
        if match is not None:
            stamp = parse_engine_time(match.group(1).decode())
            data = data[match.end() :]
        while data:
            if not self.open:
                self.timestamp, self.open = stamp, True
            cut = data.find(b"\n")
            if cut < 0:
                self.pending += data
                while len(self.pending) > self.max_bytes:
                    head = cut_at(self.pending, self.max_bytes)
                    yield self.timestamp, self.pending[:head]
                    self.pending = self.pending[head:]
                return
            for piece in split_bytes(self.pending + data[:cut], self.max_bytes):
                yield self.timestamp, piece
            self.pending, self.open = b"", False
            data = data[cut + 1 :]

    def flush(self) -> Iterator[tuple[datetime | None, bytes]]:
        if self.open:
            yield self.timestamp, self.pending
        self.pending, self.open = b"", False


def _read_exactly(raw: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = raw.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _frames(response: requests.Response, max_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(stream id, piece, whether the piece starts its frame) of a non-TTY attach/logs stream.

    A frame's payload is read in pieces of at most `max_bytes` (whatever length its header announces).
    """
    while True:
        header = _read_exactly(response.raw, 8)
        if len(header) < 8:
            return
        stream_id, length = struct.unpack(">BxxxL", header)
        starts = True
        while length:
            piece = _read_exactly(response.raw, min(length, max_bytes))
            if piece:
                yield stream_id, piece, starts
            if len(piece) < min(length, max_bytes):
                return
            length, starts = length - len(piece), False


def log_lines(
    response: requests.Response,
    *,
    replica: int,
    guard: Callable[[], AbstractContextManager[Any]],
    max_bytes: int,
) -> Iterator[LogLine]:
    """The lines of a streamed, timestamped logs response, read lazily; the response is closed at the end.

    Args:
        response: the open response of the engine's logs endpoint (non-TTY container).
        replica: the replica index every line is attributed to.
        guard: a context manager entered while reading, which translates engine failures (the runner's
            `_engine`).
        max_bytes: the longest line (`log_line_max_bytes`); a longer one comes as several.
    """
    assemblers = {stream_id: _LineAssembler(max_bytes) for stream_id in _STREAMS}

    def line(stream_id: int, stamp: datetime | None, data: bytes) -> LogLine:
        text = data.decode("utf-8", errors="replace").removesuffix("\r")
        return LogLine(timestamp=stamp, replica=replica, stream=_STREAMS[stream_id], line=text)

    try:
        with guard():
            for stream_id, piece, starts in _frames(response, max_bytes):
                if stream_id in assemblers:
                    for stamp, data in assemblers[stream_id].feed(piece, starts_frame=starts):
                        yield line(stream_id, stamp, data)
        for stream_id, assembler in assemblers.items():
            for stamp, data in assembler.flush():
                yield line(stream_id, stamp, data)
    finally:
        response.close()
