"""The service starts the ways the README and the Dockerfile start it, as real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}")
        try:
            return requests.get(url, timeout=2)
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or workers still booting
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@pytest.fixture()
def service_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "SECRET_KEY", "ENVIRONMENT"}}
    env.update(
        HOST="127.0.0.1",
        PORT=str(free_port()),
        DATABASE_URL=f"sqlite:///{tmp_path / 'service.db'}",
        PASSWORD_HASH_TIME_COST="1",
        PASSWORD_HASH_MEMORY_KIB="8",
        WEB_CONCURRENCY="2",
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    )
    return env


@pytest.fixture()
def start(service_env: dict[str, str]) -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def launch(command: list[str], **extra_env: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**service_env, **extra_env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        processes.append(process)
        return process

    yield launch
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_python_app_py_migrates_and_serves(start: Any, service_env: dict[str, str]) -> None:
    process = start([sys.executable, "app.py"])
    base = f"http://127.0.0.1:{service_env['PORT']}"
    assert wait_for(f"{base}/health", process).json()["status"] == "ok"
    assert requests.get(f"{base}/health/ready", timeout=5).status_code == 200
    assert requests.get(f"{base}/docs", timeout=5).status_code == 200
    registered = requests.post(
        f"{base}/v1/auth/register", json={"email": "first@example.com", "password": "password-123"}, timeout=5
    )
    assert registered.status_code == 201
    assert registered.json()["role"] == "admin"


def test_production_start_step_runs_gunicorn_after_migrations(start: Any, service_env: dict[str, str]) -> None:
    process = start(["bash", "scripts/serve.sh"], ENVIRONMENT="production", SECRET_KEY="p" * 48)
    base = f"http://127.0.0.1:{service_env['PORT']}"
    assert wait_for(f"{base}/health", process).status_code == 200
    ready = requests.get(f"{base}/health/ready", timeout=5)
    assert ready.status_code == 200, ready.text


def test_production_refuses_to_start_without_secret_key(start: Any) -> None:
    process = start([sys.executable, "app.py"], ENVIRONMENT="production")
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert b"SECRET_KEY is required" in output
