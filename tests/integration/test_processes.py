"""The production shape on the real engine: web process and `flask reconcile` as separate processes.

The web process has no reconciler (as under gunicorn); the reconciler process is woken across
processes (SQLite `data_version` here, `NOTIFY` on PostgreSQL) and converges a deploy made over HTTP.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from deploy_service.runner import LABEL_MANAGED
from tests.helpers import ProcessGroup, free_port, metric, wait_for, wait_until


@pytest.fixture()
def stack(docker_engine: docker.DockerClient, tmp_path: Path, processes: ProcessGroup) -> Iterator[tuple[str, str]]:
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
        # Shared by both processes, so the web's /metrics counts the reconciler's passes.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    log = tmp_path / "stack.log"
    web = processes.spawn([sys.executable, "app.py"], env=env, log=log)
    base = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_for(f"{base}/health", web)
        processes.spawn(["flask", "--app", "app", "reconcile"], env=env, log=log)
        yield base, namespace
    finally:
        processes.stop_all(timeout=20)
        for container in docker_engine.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}={namespace}"}):
            container.remove(force=True)


def reconcile_passes(base: str) -> float:
    """How many passes the reconciler process has made, as the web process's /metrics counts them."""
    for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("reconcile_pass_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def test_separate_reconciler_process_converges_a_deploy(
    stack: tuple[str, str], docker_engine: docker.DockerClient
) -> None:
    base, namespace = stack
    http = requests.Session()
    http.post(f"{base}/v1/auth/register", json={"email": "ops@example.com", "password": "ops-password"})
    token = http.post(f"{base}/v1/auth/login", json={"email": "ops@example.com", "password": "ops-password"}).json()
    http.headers["Authorization"] = f"Bearer {token['access_token']}"
    agent = http.post(f"{base}/v1/agents", json={"name": "proc", "image": "deploy-test/http-agent:latest"}).json()
    # The reconciler's first pass is done: it now sleeps until its 60 s resync unless a deploy wakes it.
    wait_until(lambda: reconcile_passes(base) >= 1, 30, what="the reconciler's first pass")
    deployment = http.post(f"{base}/v1/agents/{agent['id']}/deploy", json={"replicas": 2}).json()
    # Ready well inside the 60 s resync: it was woken.
    wait_until(lambda: http.get(f"{base}/v1/deployments/{deployment['id']}").json()["status"] == "ready", 20)
    # The release's rollout, settled by the reconciler process, is counted by the web's /metrics too.
    wait_until(
        lambda: metric(requests.get(f"{base}/metrics", timeout=10).text, "rollouts_total", outcome="completed") == 1,
        10,
        what="the reconciler process's rollout in the web's /metrics",
    )
    containers = docker_engine.containers.list(filters={"label": f"{LABEL_MANAGED}={namespace}"})
    assert len(containers) == 2
    assert http.delete(f"{base}/v1/deployments/{deployment['id']}").status_code == 200
    # The reconciler process removes them, woken by the delete (well inside its 60 s resync); one list
    # call per look (no per-container inspect that would race the removal).
    wait_until(
        lambda: not docker_engine.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={namespace}"}),
        timeout=20,
        what="the reconciler process to remove the containers",
    )
