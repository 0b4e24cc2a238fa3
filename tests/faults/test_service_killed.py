"""The service process is SIGKILLed in the middle of a deploy, then started again.

A real `python app.py` (web + embedded reconciler) on the test database deploys an agent with 3
replicas on the real engine, through `EngineProxy` (so the test can slow the engine's container
starts down and choose where the kill lands). It is SIGKILLed at one of these points, then started
again with the same settings:

- `accepted`: right after the 202, before any container exists;
- `created`: once the first container exists but before any has started (starts are held back by the
  proxy, and the kill drops them): the engine holds containers that were created and never started;
- `running`: once the first container runs (the others may or may not have started).

After the restart it must converge to exactly one running container per replica (queried on the engine
by the deployment's label), with the database's instances naming exactly those containers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.e2e.test_start_commands import ROOT, free_port, wait_for
from tests.faults.conftest import FAST_HEALTH, HTTP_AGENT, EngineView, wait_until
from tests.faults.engine_proxy import EngineProxy

START = r"^POST /v[\d.]+/containers/[0-9a-f]+/start"
REPLICAS = 3


class Service:
    """`python app.py` as a real process that the test can SIGKILL and start again."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.base = f"http://127.0.0.1:{env['PORT']}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=self.env, stdout=out, stderr=out)
        wait_for(f"{self.base}/health", self.process, timeout=60)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture()
def service(
    app: Flask, database_url: str, engine_proxy: EngineProxy, engine_view: EngineView, tmp_path: Path
) -> Iterator[Service]:
    """The service on the test database (whose schema the session built), driving the engine via the proxy."""
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "ENVIRONMENT"}}
    env.update(
        HOST="127.0.0.1",
        PORT=str(free_port()),
        DATABASE_URL=database_url,
        DOCKER_HOST=engine_proxy.docker_host,
        DOCKER_NETWORK_MODE="host",
        ENGINE_NAMESPACE=engine_view.namespace,
        HOST_PORT_RANGE="37000-37999",
        RECONCILE_INTERVAL_SECONDS="2",
        RECONCILE_TICK_SECONDS="0.05",
        ENGINE_BACKOFF_MAX_SECONDS="0.5",
        PROGRESS_DEADLINE_SECONDS="60",
        CONTAINER_STOP_TIMEOUT="1",
        METRICS_SAMPLE_SECONDS="60",
        PASSWORD_HASH_TIME_COST="1",
        PASSWORD_HASH_MEMORY_KIB="8",
        RATELIMIT_ENABLED="false",
        LOG_LEVEL="INFO",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    running = Service(env, tmp_path / "service.log")
    yield running
    running.stop()


def _login(base: str) -> requests.Session:
    http = requests.Session()
    credentials = {"email": f"k{uuid.uuid4().hex[:8]}@example.com", "password": "kill-password"}
    assert http.post(f"{base}/v1/auth/register", json=credentials, timeout=10).status_code == 201
    token = http.post(f"{base}/v1/auth/login", json=credentials, timeout=10).json()["access_token"]
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def _converged(http: requests.Session, base: str, engine: EngineView, deployment_id: str) -> bool:
    body = http.get(f"{base}/v1/deployments/{deployment_id}", timeout=10).json()
    containers = engine.containers(deployment_id)
    return (
        body["status"] == "ready"
        and sorted(c.replica for c in containers) == list(range(REPLICAS))
        and all(c.state == "running" for c in containers)
        and sorted(i["container_id"] for i in body["instances"]) == sorted(c.id for c in containers)
    )


def _reconcile_passes(base: str) -> float:
    """How many passes the embedded reconciler has made (its Prometheus histogram's count)."""
    for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("reconcile_pass_duration_seconds_count"):
            return float(line.split()[-1])
    raise AssertionError("no reconcile_pass_duration_seconds_count in /metrics")


KILL_POINTS: dict[str, Callable[[EngineView, str], Any]] = {
    "accepted": lambda engine, deployment: True,
    "created": lambda engine, deployment: engine.containers(deployment),
    "running": lambda engine, deployment: [c for c in engine.containers(deployment) if c.state == "running"],
}


@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_sigkill_mid_deploy_then_restart_gives_one_container_per_replica(
    service: Service, engine_proxy: EngineProxy, engine_view: EngineView, kill_point: str
) -> None:
    service.start()
    http = _login(service.base)
    agent = http.post(
        f"{service.base}/v1/agents",
        json={"name": f"kill-{kill_point}", "image": HTTP_AGENT, "health_check": FAST_HEALTH},
        timeout=10,
    ).json()
    if kill_point == "created":
        engine_proxy.delay(START, 2.0)
    response = http.post(f"{service.base}/v1/agents/{agent['id']}/deploy", json={"replicas": REPLICAS}, timeout=10)
    assert response.status_code == 202, response.text
    deployment = response.json()["id"]
    wait_until(lambda: KILL_POINTS[kill_point](engine_view, deployment), timeout=30, interval=0.01, what=kill_point)
    service.kill()
    engine_proxy.cut()  # drops the starts the proxy still holds back: they die with the process
    engine_proxy.clear_rules()
    engine_proxy.restore()
    before = engine_view.containers(deployment)
    if kill_point == "accepted":
        assert len(before) < REPLICAS
    if kill_point == "created":
        assert before and all(c.state == "created" for c in before), before

    service.start()
    wait_until(
        lambda: _converged(http, service.base, engine_view, deployment),
        timeout=45,
        what=f"convergence after a kill at {kill_point!r} (engine before the restart: {before})",
    )
    passes = _reconcile_passes(service.base)
    wait_until(lambda: _reconcile_passes(service.base) >= passes + 5, timeout=20, what="five more reconcile passes")
    assert len(engine_view.containers()) == REPLICAS
    assert _converged(http, service.base, engine_view, deployment)
