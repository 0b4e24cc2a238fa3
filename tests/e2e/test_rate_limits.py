"""Rate limits on real gunicorn processes: per caller on /v1, tighter per address on login, and with
Redis as storage one limit shared by several workers.

Flask-Limiter keeps one storage per process, so these run the service as real processes; Redis is
Debian's redis-server, started here on a free loopback port (scripts/test.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_start_commands import ROOT, free_port, wait_for

PASSWORD = "limit-password-1"


@pytest.fixture()
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def launch(**env: str) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"gunicorn-{port}.log"
        environment = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'limits.db'}",
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "8",
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "1",
            "GUNICORN_CMD_ARGS": "--access-logformat '%(p)s %(s)s %(U)s'",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **env,
        }
        process = subprocess.Popen(
            ["bash", "scripts/serve.sh"],
            cwd=ROOT,
            env=environment,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", process)
        return base, log

    yield launch
    for process in processes:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture()
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: scripts/test.sh installs Debian's redis-server", pytrace=False)
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import redis

                redis.Redis(host="127.0.0.1", port=port).ping()
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def login(base: str, email: str) -> dict[str, str]:
    requests.post(f"{base}/v1/auth/register", json={"email": email, "password": PASSWORD}, timeout=5)
    token = requests.post(f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=5).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def assert_limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["success"] is False and body["error"] == "rate_limited" and body["message"]
    assert int(response.headers["Retry-After"]) > 0


def test_limits_per_caller_per_address_and_per_key(gunicorn: Callable[..., tuple[str, Path]]) -> None:
    base, _ = gunicorn(RATE_LIMIT_PER_MINUTE="5", AUTH_RATE_LIMIT_PER_MINUTE="4")
    alice, bob = login(base, "alice@example.com"), login(base, "bob@example.com")  # 4 auth calls: the limit
    assert_limited(requests.post(f"{base}/v1/auth/login", json={"email": "x@example.com", "password": PASSWORD}))
    statuses = [requests.get(f"{base}/v1/agents", headers=alice, timeout=5).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert_limited(requests.get(f"{base}/v1/agents", headers=alice, timeout=5))
    assert requests.get(f"{base}/v1/agents", headers=bob, timeout=5).status_code == 200
    assert all(requests.get(f"{base}/health", timeout=5).status_code == 200 for _ in range(20))

    agent = requests.post(f"{base}/v1/agents", headers=bob, json={"name": "a", "image": "busybox"}, timeout=5).json()
    key = requests.post(f"{base}/v1/agents/{agent['id']}/api-key", headers=bob, json={}, timeout=5).json()["key"]
    evaluation = {"prompt": "p", "response": "r"}
    codes = [
        requests.post(f"{base}/v1/evaluations", headers={"X-API-Key": key}, json=evaluation, timeout=5).status_code
        for _ in range(6)
    ]
    assert codes == [201] * 5 + [429]


class SlowClient:
    """A request whose last header line is held back, so the sync worker that accepted it stays busy."""

    def __init__(self, base: str, headers: dict[str, str], path: str = "/v1/agents") -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n").encode())

    def finish(self) -> int:
        self.sock.sendall(b"Connection: close\r\n\r\n")
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        self.sock.close()
        return int(data.split(b" ", 2)[1])


def test_redis_storage_shares_one_limit_across_workers(
    gunicorn: Callable[..., tuple[str, Path]], redis_url: str
) -> None:
    base, log = gunicorn(
        RATE_LIMIT_PER_MINUTE="10",
        AUTH_RATE_LIMIT_PER_MINUTE="100",
        RATELIMIT_STORAGE_URI=redis_url,
        WEB_CONCURRENCY="2",
        GUNICORN_WORKER_CLASS="sync",  # one request at a time per worker
    )
    headers = login(base, "carol@example.com")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and log.read_text().count("Booting worker") < 2:
        time.sleep(0.1)

    def call() -> int:
        return requests.get(f"{base}/v1/agents", headers={**headers, "Connection": "close"}, timeout=10).status_code

    # Hold one worker busy, so the other serves; then swap, so the limit is spent on both.
    hold_first = SlowClient(base, headers)
    time.sleep(0.3)  # the accept of a half-sent request cannot be observed from outside; give it a moment
    statuses = [call() for _ in range(6)]
    hold_second = SlowClient(base, headers)
    time.sleep(0.3)
    statuses.append(hold_first.finish())
    statuses += [call() for _ in range(8)]
    statuses.append(hold_second.finish())
    assert statuses.count(200) == 10 and statuses.count(429) == 6, statuses
    served_by = {line.split()[0] for line in log.read_text().splitlines() if line.endswith(" /v1/agents")}
    assert len(served_by) == 2, "both workers served requests"
