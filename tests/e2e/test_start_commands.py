"""The service starts the ways the README and the Dockerfile start it, as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.helpers import ProcessGroup, free_port, wait_for


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


Start = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture()
def start(service_env: dict[str, str], processes: ProcessGroup) -> Start:
    """Start a command of the service in the repository root, with `service_env` and extra variables."""

    def launch(command: list[str], **extra_env: str) -> subprocess.Popen[bytes]:
        return processes.spawn(command, env={**service_env, **extra_env})

    return launch


def test_python_app_py_migrates_and_serves(start: Start, service_env: dict[str, str]) -> None:
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


def test_production_start_step_runs_gunicorn_after_migrations(start: Start, service_env: dict[str, str]) -> None:
    # This engine has no `bridge` network: `auto` takes host networking, which production allows only when told.
    process = start(
        ["bash", "scripts/serve.sh"], ENVIRONMENT="production", SECRET_KEY="p" * 48, HOST_NETWORK_ALLOWED="true"
    )
    base = f"http://127.0.0.1:{service_env['PORT']}"
    assert wait_for(f"{base}/health", process).status_code == 200
    ready = requests.get(f"{base}/health/ready", timeout=5)
    assert ready.status_code == 200, ready.text


def test_production_refuses_to_start_without_secret_key(start: Start) -> None:
    process = start([sys.executable, "app.py"], ENVIRONMENT="production")
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert b"SECRET_KEY is required" in output
