"""The service process is SIGKILLed in the middle of a deploy, then started again.

A real `python app.py` (web + embedded reconciler) — or, in the production shape, a web process and
a separate `flask --app app reconcile` process — on the test database deploys an agent with 3
replicas on the real engine, through `EngineProxy` (so the test can slow the engine's container
starts down and choose where the kill lands). It is SIGKILLed at one of these points, then started
again with the same settings (every process of the service is killed and started again):

- `accepted`: right after the 202, before any container exists (the proxy holds container creates
  back 2 s, and the kill drops them);
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.faults.conftest import FAST_HEALTH, HTTP_AGENT, EngineView
from tests.faults.engine_proxy import EngineProxy
from tests.helpers import ProcessGroup, free_port, free_port_block, wait_for, wait_until

START = r"^POST /v[\d.]+/containers/[0-9a-f]+/start"
CREATE = r"^POST /v[\d.]+/containers/create"
REPLICAS = 3


class Service:
    """The service as real processes that the test can SIGKILL and start again.

    `embedded`: `python app.py` (web + reconciler thread). `separate`: the production shape, a web
    process without a reconciler and `flask --app app reconcile` beside it, sharing a Prometheus
    multiprocess directory so the web's `/metrics` counts the reconciler's passes.
    """

    def __init__(self, env: dict[str, str], log: Path, group: ProcessGroup) -> None:
        self.env, self.log, self.group = env, log, group
        self.base = f"http://127.0.0.1:{env['PORT']}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.shape = "embedded"

    def _spawn(self, command: list[str], **extra: str) -> subprocess.Popen[bytes]:
        process = self.group.spawn(command, env={**self.env, **extra}, log=self.log)
        self.processes.append(process)
        return process

    def start(self) -> None:
        if self.shape == "embedded":
            web = self._spawn([sys.executable, "app.py"])
        else:
            web = self._spawn([sys.executable, "app.py"], RECONCILER_ENABLED="false")
        wait_for(f"{self.base}/health", web, timeout=60)
        if self.shape == "separate":
            self._spawn(["flask", "--app", "app", "reconcile"])

    def kill(self) -> None:
        """SIGKILL every process of the service (by pid), at once."""
        for process in self.processes:
            os.kill(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait(timeout=10)
        self.processes = []


@pytest.fixture()
def service(
    app: Flask,
    database_url: str,
    engine_proxy: EngineProxy,
    engine_view: EngineView,
    tmp_path: Path,
    processes: ProcessGroup,
) -> Service:
    """The service on the test database (whose schema the session built), driving the engine via the proxy."""
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "ENVIRONMENT"}}
    ports = free_port_block(20)  # the replicas' host ports (host networking)
    env.update(
        HOST="127.0.0.1",
        PORT=str(free_port()),
        DATABASE_URL=database_url,
        DOCKER_HOST=engine_proxy.docker_host,
        DOCKER_NETWORK_MODE="host",
        ENGINE_NAMESPACE=engine_view.namespace,
        HOST_PORT_RANGE=f"{ports}-{ports + 19}",
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
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    (tmp_path / "metrics").mkdir()
    return Service(env, tmp_path / "service.log", processes)


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


@pytest.mark.parametrize(
    ("shape", "kill_point"),
    [("embedded", point) for point in KILL_POINTS] + [("separate", "created"), ("separate", "running")],
)
def test_sigkill_mid_deploy_then_restart_gives_one_container_per_replica(
    service: Service, engine_proxy: EngineProxy, engine_view: EngineView, shape: str, kill_point: str
) -> None:
    service.shape = shape
    service.start()
    http = _login(service.base)
    agent = http.post(
        f"{service.base}/v1/agents",
        json={"name": f"kill-{shape}-{kill_point}", "image": HTTP_AGENT, "health_check": FAST_HEALTH},
        timeout=10,
    ).json()
    if kill_point == "accepted":
        engine_proxy.delay(CREATE, 2.0)
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
        assert before == []
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
