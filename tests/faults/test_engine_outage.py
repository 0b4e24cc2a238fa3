"""The container engine goes away in the middle of a deploy (the real engine, behind a cuttable proxy).

The shared engine is never stopped: the service talks to it through `EngineProxy`, and the test cuts
the proxy at the moment the reconciler asks the engine to *start* the first replica of a 3-replica
deploy (its create went through: the engine holds a container that was never started). While cut:
every mutating call answers 503 `engine_unavailable` and writes nothing, and readiness says the engine
check fails. Once the proxy is restored the deploy converges to exactly one running container per
replica, the containers that were created and never started included.

The progress deadline does not count the outage: no pass can run while the engine is away, and the
deadline is measured from the rollout's start or from the last pass the engine did not answer,
whichever is later. So a deploy interrupted by an outage longer than the deadline still becomes
`ready` once the engine is back, instead of being failed by the first pass after it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentEvent, Instance
from deploy_service.reconciler import Reconciler
from deploy_service.runner import DockerRunner
from deploy_service.runner.settings import RunnerSettings
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import settings_for
from tests.factories import AuthActions, make_user
from tests.faults.conftest import FAST_HEALTH, HTTP_AGENT, EngineView
from tests.faults.engine_proxy import EngineProxy
from tests.helpers import ENGINE, free_port_block, wait_until

PORTS = free_port_block(100)
SETTINGS = replace(
    ENGINE,
    progress_deadline=30.0,
    stop_timeout=1.0,
    port_range=(PORTS, PORTS + 99),  # probed: free on loopback when the module was imported
)
FIRST_START = r"^POST /v[\d.]+/containers/[0-9a-f]+/start"


@dataclass
class Stack:
    app: Flask
    client: FlaskClient
    headers: dict[str, str]
    proxy: EngineProxy
    engine: EngineView
    reconciler: Reconciler

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return getattr(self.client, method)(path, headers=self.headers, json=body)

    def agent(self, **fields: Any) -> str:
        body = {"name": f"agent-{uuid.uuid4().hex[:8]}", "image": HTTP_AGENT, "health_check": FAST_HEALTH, **fields}
        response = self.call("post", "/v1/agents", body)
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["id"])

    def deploy(self, agent_id: str, replicas: int) -> str:
        response = self.call("post", f"/v1/agents/{agent_id}/deploy", {"replicas": replicas})
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["id"])

    def status(self, deployment_id: str) -> str:
        return str(self.call("get", f"/v1/deployments/{deployment_id}").get_json()["status"])

    def wait_converged(self, deployment_id: str, replicas: int, *, what: str, timeout: float = 30) -> None:
        try:
            wait_until(lambda: self.converged(deployment_id, replicas), timeout=timeout, what=what)
        except AssertionError as exc:
            body = self.call("get", f"/v1/deployments/{deployment_id}").get_json()
            events = self.call("get", f"/v1/deployments/{deployment_id}/events?limit=100").get_json()["items"]
            story = [(e["event_type"], e["message"]) for e in reversed(events)]
            raise AssertionError(f"{exc}\n{body}\n{story}\n{self.engine.containers(deployment_id)}") from None

    def converged(self, deployment_id: str, replicas: int) -> bool:
        """Ready, with exactly one running container per replica, and the database naming those containers."""
        body = self.call("get", f"/v1/deployments/{deployment_id}").get_json()
        containers = self.engine.containers(deployment_id)
        return (
            body["status"] == "ready"
            and sorted(c.replica for c in containers) == list(range(replicas))
            and all(c.state == "running" for c in containers)
            and {i["container_id"] for i in body["instances"]} == {c.id for c in containers}
        )


def make_stack(
    app: Flask, client: FlaskClient, auth: AuthActions, proxy: EngineProxy, engine: EngineView, settings: Any
) -> Iterator[Stack]:
    """The app drives the engine through the proxy, with a reconciler loop of its own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DOCKER_HOST", proxy.docker_host)  # read once, when the runner makes its client
    runner = DockerRunner(RunnerSettings(network_mode="host", namespace=engine.namespace, docker_timeout=5))
    mp.setitem(app.extensions, RUNNER_KEY, runner)
    loop = replace(settings_for(app).loop, engine_backoff_max=0.5)
    reconciler = Reconciler(app, runner=runner, settings=settings, loop_settings=loop)
    reconciler.start()
    try:
        headers = auth.headers(make_user(app))
        yield Stack(app, client, headers, proxy, engine, reconciler)
    finally:
        reconciler.stop()
        runner.close()
        mp.undo()


@pytest.fixture()
def stack(
    app: Flask, client: FlaskClient, auth: AuthActions, engine_proxy: EngineProxy, engine_view: EngineView
) -> Iterator[Stack]:
    yield from make_stack(app, client, auth, engine_proxy, engine_view, SETTINGS)


def snapshot(app: Flask) -> dict[str, Any]:
    """Everything a mutating call could write about deployments."""
    with app.app_context():
        deployments = db.session.execute(
            select(
                Deployment.id,
                Deployment.status,
                Deployment.desired_state,
                Deployment.replicas_desired,
                Deployment.generation,
                Deployment.version,
            ).order_by(Deployment.id)
        ).all()
        events = db.session.execute(
            select(DeploymentEvent.deployment_id, func.count()).group_by(DeploymentEvent.deployment_id)
        ).all()
        instances = db.session.scalar(select(func.count()).select_from(Instance))
        db.session.rollback()
    return {"deployments": [tuple(row) for row in deployments], "events": dict(events), "instances": instances}


def cut_at_first_start(stack: Stack, replicas: int, **agent: Any) -> str:
    """Deploy a new agent; the proxy cuts when the reconciler asks the engine to start its first replica."""
    stack.proxy.cut_on(FIRST_START)
    deployment = stack.deploy(stack.agent(**agent), replicas)
    wait_until(stack.proxy.cut_event.is_set, timeout=20, what="the cut at the first container start")
    failures = stack.reconciler.engine_failures
    wait_until(lambda: stack.reconciler.engine_failures > failures, timeout=10, what="a failed reconcile pass")
    created = stack.engine.containers(deployment)
    assert created and all(c.state == "created" for c in created), created  # created, never started
    return deployment


def test_engine_cut_mid_deploy_refuses_writes_then_converges(stack: Stack) -> None:
    running = stack.deploy(stack.agent(), 1)
    stack.wait_converged(running, 1, what="the first deployment to be ready")
    waiting_agent = stack.agent()

    deploying = cut_at_first_start(stack, 3)
    assert stack.status(deploying) == "deploying"

    ready = stack.call("get", "/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["engine"]["status"] == "error"
    assert ready.get_json()["checks"]["database"]["status"] == "ok"

    before = snapshot(stack.app)
    refused = {
        "deploy": stack.call("post", f"/v1/agents/{waiting_agent}/deploy", {"replicas": 1}),
        "scale": stack.call("post", f"/v1/deployments/{running}/scale", {"replicas": 2}),
        "restart": stack.call("post", f"/v1/deployments/{running}/restart"),
        "stop": stack.call("post", f"/v1/deployments/{running}/stop"),
        "delete": stack.call("delete", f"/v1/deployments/{running}"),
        "delete deploying": stack.call("delete", f"/v1/deployments/{deploying}"),
    }
    for action, response in refused.items():
        assert response.status_code == 503, (action, response.get_json())
        body = response.get_json()
        assert body["success"] is False and body["error"] == "engine_unavailable", (action, body)
    assert snapshot(stack.app) == before  # nothing written: no row, no event, no version bump
    assert stack.call("get", f"/v1/agents/{waiting_agent}/deployment-status").status_code == 404

    stack.proxy.restore()
    stack.wait_converged(deploying, 3, what="the interrupted deploy to converge")
    assert stack.converged(running, 1)
    assert stack.call("get", "/health/ready").status_code == 200
    assert stack.call("post", f"/v1/deployments/{running}/scale", {"replicas": 2}).status_code == 202
    stack.wait_converged(running, 2, what="the scale after the outage")


@pytest.fixture()
def short_deadline_stack(
    app: Flask, client: FlaskClient, auth: AuthActions, engine_proxy: EngineProxy, engine_view: EngineView
) -> Iterator[Stack]:
    yield from make_stack(app, client, auth, engine_proxy, engine_view, replace(SETTINGS, progress_deadline=3.0))


def test_an_outage_longer_than_the_progress_deadline_does_not_fail_the_deploy(short_deadline_stack: Stack) -> None:
    stack = short_deadline_stack
    # The agent listens 1 s after it starts: it cannot be ready in the first pass after the outage.
    deployment = cut_at_first_start(stack, 2, env={"STARTUP_DELAY": "1"})
    outage = time.monotonic()
    wait_until(lambda: time.monotonic() - outage > 3.5, timeout=5, what="an outage longer than the deadline")
    assert stack.status(deployment) == "deploying"  # no pass can run while the engine is away

    stack.proxy.restore()
    stack.wait_converged(deployment, 2, what="the deploy to converge after the outage")
    events = stack.call("get", f"/v1/deployments/{deployment}/events?limit=200").get_json()["items"]
    assert [e for e in events if e["status"] == "failed"] == []
