"""Helpers shared by the test modules: waiting on what can be observed, free ports, real processes.

Fixtures live in the `conftest.py` files; what a test module imports from another one lives here, so
no test module imports another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

    from deploy_service.reconciler import Reconciler

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root (where `app.py` and `scripts/` are)."""

WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
"""This pytest-xdist worker's number (0 without xdist): scripts/test.sh runs the engine's tests on two."""


def port_range(low: int, high: int) -> tuple[int, int]:
    """A fixed host-port range of the tests, this worker's own: worker N's is N × 10,000 ports lower, so the
    reconcilers of two workers never hand out each other's ports (both stay below the kernel's ephemeral
    ports, 32768-, and above 1024 for up to three workers)."""
    shift = 10_000 * WORKER
    if low - shift <= 1024:
        raise RuntimeError(f"no test port range for xdist worker {WORKER}: run the engine's tests on at most 3")
    return low - shift, high - shift


Gunicorn = Callable[..., tuple[str, Path]]
"""The `gunicorn` fixture (tests/e2e): start the service with extra variables → (base URL, log file)."""


def build_steps(client: Any, marker: str) -> list[str]:
    """The ids of the engine's containers whose command carries `marker`: a test's own build steps (`RUN echo
    <marker> ...`), whatever the tests beside it (another xdist worker) run. The low-level list: no inspect per
    container, which would race the engine's own clean-up."""
    rows = client.api.containers(all=True)
    return [row["Id"] for row in rows if marker in (row.get("Command") or "")]


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, *, interval: float = 0.05, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}; last value: {last!r}")
        time.sleep(interval)


class Clock:
    """A clock a test moves, put in place of a module's `utcnow` (`monkeypatch.setattr(module, "utcnow", clock)`).

    Frozen by default: it reads the same until `advance`d, so a test can assert exact times. With
    `running=True` it follows the real clock plus what `advance` added, for code that also waits out
    short real delays between reads (the reconciler's passes).
    """

    def __init__(self, *, running: bool = False) -> None:
        self._start = datetime.now(UTC)
        self._running = running
        self._offset = timedelta()

    def __call__(self) -> datetime:
        return (datetime.now(UTC) if self._running else self._start) + self._offset

    def advance(self, seconds: float) -> datetime:
        """Move the clock `seconds` ahead; returns the new time."""
        self._offset += timedelta(seconds=seconds)
        return self()


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_block(size: int, *, attempts: int = 200) -> int:
    """The first of `size` consecutive ports that were all free on 127.0.0.1 a moment ago."""
    for _ in range(attempts):
        first = free_port()
        if first + size > 65535:
            continue
        probes: list[socket.socket] = []
        try:
            for port in range(first, first + size):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AssertionError(f"no block of {size} free ports found")


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> Any:
    """The first answer of `url` (any status); fails if `process` exits or nothing answers in time."""
    import requests

    def answer() -> Any:
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}")
        try:
            return requests.get(url, timeout=2)
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or no worker booted yet
            return None

    return wait_until(answer, timeout, interval=0.1, what=f"{url} to answer")


class _Stoppable(Protocol):
    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class _Joinable:
    """A `multiprocessing.Process` seen as a `Popen` (poll, terminate, kill, wait)."""

    def __init__(self, process: Any) -> None:
        self.process = process

    def poll(self) -> int | None:
        return None if self.process.is_alive() else int(self.process.exitcode or 0)

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.is_alive():
            raise subprocess.TimeoutExpired(str(self.process.name), timeout or 0)
        return int(self.process.exitcode or 0)


class ProcessGroup:
    """The real processes a test started; `stop_all()` (the `processes` fixture's teardown) ends them by pid."""

    def __init__(self, cwd: Path = ROOT) -> None:
        self.cwd = cwd
        self.started: list[_Stoppable] = []

    def spawn(
        self, command: list[str], *, env: dict[str, str], log: Path | None = None, **popen: Any
    ) -> subprocess.Popen[bytes]:
        """Start `command` in the repository root; output goes to `log` (appended) or is kept in a pipe."""
        if log is not None:
            with log.open("ab") as out:
                process = subprocess.Popen(command, cwd=self.cwd, env=env, stdout=out, stderr=out, **popen)
        else:
            popen.setdefault("stdout", subprocess.PIPE)
            popen.setdefault("stderr", subprocess.STDOUT)
            process = subprocess.Popen(command, cwd=self.cwd, env=env, **popen)
        self.started.append(process)
        return process

    def track(self, process: Any) -> None:
        """Stop `process` (a `multiprocessing.Process` or another `Popen`) with the others."""
        self.started.append(_Joinable(process) if hasattr(process, "join") else process)

    def stop_all(self, *, timeout: float = 15.0) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.started = []


def accept_backlog(port: int) -> int:
    """How many connections wait in the accept queue of the socket listening on 127.0.0.1:`port`.

    Read from /proc/net/tcp: for a listening socket, `rx_queue` is the accept backlog, so 0 means a
    server process has accepted every connection made so far.
    """
    local = f"0100007F:{port:04X}"
    backlog = 0
    found = False
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # 0A: LISTEN
            found = True
            backlog += int(fields[4].split(":")[1], 16)
    if not found:
        raise AssertionError(f"nothing listens on 127.0.0.1:{port}")
    return backlog


class SlowClient:
    """A request whose last header line is held back, so the sync worker that accepted it stays busy.

    The constructor returns once a worker has accepted the connection (the listening socket's accept
    queue is empty again), so the next request goes to another worker.
    """

    def __init__(self, base: str, headers: dict[str, str], path: str = "/v1/agents") -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n").encode())
        wait_until(lambda: accept_backlog(int(port)) == 0, 10, interval=0.01, what="a worker to accept")

    def finish(self) -> int:
        self.sock.sendall(b"Connection: close\r\n\r\n")
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        self.sock.close()
        return int(data.split(b" ", 2)[1])


# -- HTTP and the reconciler on the in-memory runner (tests/api, tests/security) -------------------


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus exposition's samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_error(response: Any, status: int, kind: str) -> dict[str, Any]:
    """The response is the contract's error body with `status` and `kind`; returns the body."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert body["success"] is False, body
    assert body["error"] == kind, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def _fast_settings() -> Any:
    from deploy_service.reconciler import ReconcileSettings

    return ReconcileSettings(
        resync=1.0,
        tick=0.01,
        progress_deadline=3.0,
        startup_grace=0.0,
        backoff_base=0.01,
        backoff_max=0.05,
        restart_budget=2,
        stable_seconds=60.0,
        stop_timeout=1.0,
        workers=4,
        # Fixed (per xdist worker): the reconciler binds each port before it hands it out (reconciler/ports.py),
        # and the Swarm driver needs whole blocks of 100 (worker 0's ports 31000-31999: blocks 310-319).
        port_range=port_range(31000, 31999),
        replica_host="127.0.0.1",
    )


FAST = _fast_settings()
"""Reconciler settings for tests on the in-memory runner: passes every 10 ms, tiny backoffs."""


def _engine_settings() -> Any:
    from deploy_service.reconciler import ReconcileSettings

    return ReconcileSettings(
        resync=2.0,
        tick=0.05,
        progress_deadline=8.0,
        startup_grace=0.3,
        backoff_base=0.2,
        backoff_max=1.0,
        restart_budget=2,
        stable_seconds=60.0,
        stop_timeout=2.0,
        workers=8,
        # Fixed (per xdist worker, `port_range`): the reconciler binds each port before it hands it out
        # (reconciler/ports.py), and the Swarm runner needs whole blocks of 100 (a fresh one per rolling
        # update). Below the kernel's ephemeral ports (32768-60999 by default), which any outgoing
        # connection may hold at the moment a replica binds its port: a replica of block 328 once exited
        # "address in use" in a rollback.
        port_range=port_range(30000, 30999),
        replica_host="127.0.0.1",
        sample_every=60.0,
    )


ENGINE = _engine_settings()
"""Reconciler settings for tests on the real engine (each module `replace`s what it needs otherwise)."""


def converge(reconciler: Reconciler, until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Run passes until `until()` holds (the preparer works in the background between passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconciler.run_once()
        if until():
            return
        time.sleep(0.01)
    raise AssertionError("did not converge in time")


class Api:
    """A logged-in user's requests through the test client."""

    def __init__(self, client: FlaskClient, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)

    def post(self, path: str, json: Any = None) -> Any:
        return self.client.post(path, headers=self.headers, json=json)

    def patch(self, path: str, json: Any = None) -> Any:
        return self.client.patch(path, headers=self.headers, json=json)

    def delete(self, path: str) -> Any:
        return self.client.delete(path, headers=self.headers)

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/deployments/{deployment_id}")
        assert response.status_code == 200, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    def status_is(self, deployment_id: str, status: str) -> Callable[[], bool]:
        return lambda: self.deployment(deployment_id)["status"] == status

    def events(self, deployment_id: str, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{key}={value}" for key, value in filters.items())
        items: list[dict[str, Any]] = self.get(f"/v1/deployments/{deployment_id}/events?limit=200&{query}").get_json()[
            "items"
        ]
        return items


def new_agent(app: Flask, api: Api, **overrides: Any) -> dict[str, Any]:
    """An agent owned by `api`'s user, made through the service."""
    from tests.factories import make_agent

    me = api.get("/v1/auth/me").get_json()
    owner = type("Owner", (), {"id": me["id"]})
    return make_agent(app, owner, **overrides)  # type: ignore[arg-type]


def deploy(api: Api, agent_id: str, **body: Any) -> dict[str, Any]:
    """POST /v1/deployments for `agent_id`; asserts the 202 and returns the body."""
    response = api.post("/v1/deployments", {"agent_id": agent_id, **body})
    assert response.status_code == 202, response.get_json()
    deployment: dict[str, Any] = response.get_json()
    return deployment


# -- webhooks (tests/api/test_webhooks.py, tests/integration/test_deployments_engine.py) -------------


class Receiver:
    """A webhook receiver on loopback that records what it gets and answers `status`.

    `headers` are added to each answer (a `Location`, say). With `tls` (a server-side context) it
    speaks https and records the name each client asked for in the TLS handshake (`server_names`);
    `host` is then the name its `url` uses (resolve it to 127.0.0.1 in the test).
    """

    def __init__(self, status: int = 204, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.status = status
        self.headers: dict[str, str] = {}
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.server_names: list[str | None] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.server.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _context: self.server_names.append(name)  # type: ignore[assignment,misc]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"{'https' if tls else 'http'}://{host}:{port}/hooks/alerts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (Standard Webhooks): HMAC-SHA256 over "id.timestamp.body" with the secret's key."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, part.removeprefix("v1,")) for part in headers["webhook-signature"].split())


def app_instances(make_app: Callable[..., Any], count: int = 2, **config: Any) -> list[Any]:
    """Test clients of `count` apps on the test database (each its own engine and pool: as processes),
    each with an in-memory runner, for tests of what concurrent workers may race on."""
    from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
    from tests.fakes import FakeRunner

    clients = []
    for _ in range(count):
        other = make_app(**config)
        other.extensions[RUNNER_KEY] = FakeRunner()
        clients.append(other.test_client())
    return clients


def certificates(directory: Path, *names: str) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    """A throwaway CA and, per name, a certificate for it signed by that CA: (CA file, name → (cert, key))."""
    now = datetime.now(UTC)

    def write(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    def issue(subject: str, key: Any, issuer_key: Any, issuer: x509.Name | None, *, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("Test CA", ca_key, ca_key, None, ca=True)
    ca_file = write(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    issued: dict[str, tuple[Path, Path]] = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(name, key, ca_key, ca_cert.subject, ca=False)
        issued[name] = (
            write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
            write(
                directory / f"{name}.key",
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
            ),
        )
    return ca_file, issued
