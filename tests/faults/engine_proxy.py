"""A cuttable forwarder between the service and the container engine, for fault-injection tests.

The shared engine must never be stopped, so a test stops *its view* of the engine instead: the
service is pointed (`DOCKER_HOST=unix://<proxy socket>`) at this proxy, which forwards every
connection to the real engine socket. The test can then

- `cut()`: close the listening socket and every forwarded connection, so the next call gets
  "connection refused" and calls in flight lose their connection, exactly as when dockerd dies;
- `restore()`: listen again on the same path;
- `cut_on(pattern)`: cut at the moment a request whose request line matches `pattern` arrives, without
  forwarding it (e.g. the first container *start*, after its *create* went through);
- `delay(pattern, seconds)`: hold matching requests back before forwarding them (slow engine).

Every request's line is logged in `requests`, and its headers in `headers` (what the service sent the
engine, e.g. that no `X-Registry-Auth` or `X-Registry-Config` went with a pull or a build).

With `tcp=True` it listens on a loopback TCP port instead (`DOCKER_HOST=tcp://127.0.0.1:<port>`): the
engine as a remote one is reached, over TCP, for the remote-engine tests.

Everything runs in daemon threads of the test process; `close()` stops them and removes the socket.
"""

from __future__ import annotations

import os
import re
import select
import socket
import tempfile
import threading
import time
from pathlib import Path

ENGINE_SOCKET = "/var/run/docker.sock"
_REQUEST_LINE = re.compile(rb"^[A-Z]+ (\S+) HTTP/1\.[01]\r\n", re.MULTILINE)


class EngineProxy:
    """A unix-socket forwarder to the engine socket that a test can cut and restore."""

    def __init__(self, upstream: str = ENGINE_SOCKET, *, tcp: bool = False) -> None:
        self.upstream = upstream
        self.tcp = tcp
        self.port = 0
        self._dir = tempfile.mkdtemp(prefix="eproxy-")
        self.path = str(Path(self._dir) / "engine.sock")
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._cut_pattern: re.Pattern[bytes] | None = None
        self._delays: list[tuple[re.Pattern[bytes], float]] = []
        self._closed = False
        self.requests: list[str] = []
        """Every request line's method and path that went through (or triggered a cut), in order."""
        self.headers: list[tuple[str, dict[str, str]]] = []
        """Every request's `METHOD path` and its headers (names in lower case), in order."""
        self.cut_event = threading.Event()
        """Set when the proxy is cut (by `cut()` or a `cut_on` match)."""

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}" if self.tcp else f"unix://{self.path}"

    # -- control ----------------------------------------------------------------------------------

    def start(self) -> EngineProxy:
        self.restore()
        return self

    def restore(self) -> None:
        """Listen (again): new connections are forwarded to the engine."""
        with self._lock:
            if self._listener is not None:
                return
            if self.tcp:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self.port))
                self.port = listener.getsockname()[1]
            else:
                if os.path.exists(self.path):
                    os.unlink(self.path)
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(self.path)
            listener.listen(64)
            self._listener = listener
            self.cut_event.clear()
        threading.Thread(target=self._accept, args=(listener,), name="engine-proxy-accept", daemon=True).start()

    def cut(self) -> None:
        """Stop listening and drop every forwarded connection: the engine 'is gone'."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, set()
            self._cut_pattern = None
            self.cut_event.set()
        if listener is not None:
            _close(listener)
        for client, upstream in pairs:
            _close(client)
            _close(upstream)

    def cut_on(self, pattern: str) -> None:
        """Cut when a request whose `METHOD path` matches `pattern` (a regex) arrives; it is not forwarded."""
        with self._lock:
            self._cut_pattern = re.compile(pattern.encode())

    def delay(self, pattern: str, seconds: float) -> None:
        """Hold requests whose `METHOD path` matches `pattern` for `seconds` before forwarding them."""
        with self._lock:
            self._delays.append((re.compile(pattern.encode()), seconds))

    def clear_rules(self) -> None:
        """Forget `cut_on` and `delay` rules."""
        with self._lock:
            self._cut_pattern = None
            self._delays = []

    def close(self) -> None:
        self._closed = True
        self.cut()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.rmdir(self._dir)

    # -- forwarding -------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or closed
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                _close(client)
                _close(upstream)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._pairs.add((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), name="engine-proxy-pump", daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways until either side closes; inspect the client's request lines."""
        sockets = [client, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                if self._closed:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client and not self._forward_request(data):
                        return
                    (upstream if source is client else client).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._pairs.discard((client, upstream))
            _close(client)
            _close(upstream)

    def _forward_request(self, data: bytes) -> bool:
        """Apply cut/delay rules to a chunk from the client; False when it must not be forwarded."""
        if self.cut_event.is_set():
            return False  # a request racing the cut on another connection
        for match in _REQUEST_LINE.finditer(data):
            line = data[match.start() : match.end()].split(b" ")
            described = line[0] + b" " + line[1]
            self.requests.append(described.decode(errors="replace"))
            self.headers.append((described.decode(errors="replace"), _headers(data, match.end())))
            with self._lock:
                pattern, delays = self._cut_pattern, list(self._delays)
            if pattern is not None and pattern.search(described):
                self.cut()
                return False
            for delay_pattern, seconds in delays:
                if delay_pattern.search(described):
                    time.sleep(seconds)
        return True


def _headers(data: bytes, start: int) -> dict[str, str]:
    """The header lines of the request whose line ends at `start` in `data` (those within this chunk)."""
    end = data.find(b"\r\n\r\n", start)
    block = data[start : end if end >= 0 else len(data)].decode("latin-1")
    fields = (line.split(":", 1) for line in block.split("\r\n") if ":" in line)
    return {name.strip().lower(): value.strip() for name, value in fields}


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
