"""The production shape on the real engine: web process and `flask reconcile` as separate processes.

The web process has no reconciler (as under gunicorn); the reconciler process is woken across
processes (SQLite `data_version` here, `NOTIFY` on PostgreSQL) and converges a deploy made over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from deploy_service.runner import LABEL_MANAGED
from tests.e2e.test_start_commands import ROOT, free_port, wait_for


@pytest.fixture()
def stack(docker_engine: docker.DockerClient, tmp_path: Path) -> Iterator[tuple[str, str]]:
    namespace = f"proc-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'stack.db'}",
        "ENGINE_NAMESPACE": namespace,
        "DOCKER_NETWORK_MODE": "host",
        "RECONCILER_ENABLED": "false",
        "RECONCILE_INTERVAL_SECONDS": "60",
        "RECONCILE_TICK_SECONDS": "0.1",
        "STARTUP_GRACE_SECONDS": "0.2",
        "CONTAINER_STOP_TIMEOUT": "1",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    web = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{env['PORT']}"
    processes = [web]
    try:
        wait_for(f"{base}/health", web)
        reconciler = subprocess.Popen(
            ["flask", "--app", "app", "reconcile"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        processes.append(reconciler)
        yield base, namespace
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        for container in docker_engine.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}={namespace}"}):
            container.remove(force=True)


def test_separate_reconciler_process_converges_a_deploy(
    stack: tuple[str, str], docker_engine: docker.DockerClient
) -> None:
    base, namespace = stack
    http = requests.Session()
    http.post(f"{base}/v1/auth/register", json={"email": "ops@example.com", "password": "ops-password"})
    token = http.post(f"{base}/v1/auth/login", json={"email": "ops@example.com", "password": "ops-password"}).json()
    http.headers["Authorization"] = f"Bearer {token['access_token']}"
    agent = http.post(f"{base}/v1/agents", json={"name": "proc", "image": "deploy-test/http-agent:latest"}).json()
    time.sleep(1.0)  # let the reconciler settle into its 60 s resync sleep
    started = time.monotonic()
    deployment = http.post(f"{base}/v1/agents/{agent['id']}/deploy", json={"replicas": 2}).json()
    status = "deploying"
    while status != "ready" and time.monotonic() - started < 20:
        status = http.get(f"{base}/v1/deployments/{deployment['id']}").json()["status"]
        time.sleep(0.05)
    assert status == "ready"
    assert time.monotonic() - started < 20  # well inside the 60 s resync: it was woken
    containers = docker_engine.containers.list(filters={"label": f"{LABEL_MANAGED}={namespace}"})
    assert len(containers) == 2
    assert http.delete(f"{base}/v1/deployments/{deployment['id']}").status_code == 200
    deleted = time.monotonic()
    # The reconciler process removes them, woken by the delete (well inside its 60 s resync).
    # One list call (no per-container inspect that would race the removal).
    remaining = [c.id for c in containers]
    while remaining and time.monotonic() - deleted < 20:
        remaining = [
            row["Id"]
            for row in docker_engine.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={namespace}"})
        ]
        time.sleep(0.05)
    assert remaining == []
