"""Bridge mode on the real engine: each deployment on a user-defined bridge network of its own.

This engine runs `dockerd --bridge=none --iptables=false`: it has no default `bridge` network, but it
creates user-defined bridge networks, and it publishes ports on them (docker-proxy, the userland proxy,
needs no iptables). So these tests set `DOCKER_NETWORK_MODE=bridge` (never `auto`, which takes host
networking on an engine without a `bridge` network).

No traffic is ever sent over the bridge (test traffic stays on loopback): the agents have no health
check (a replica counts as healthy after the start-up grace), and nothing calls `interact` or a replica's
port; the tests only inspect what the engine made: networks, their labels and members, port bindings.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import docker
import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.reconciler import Reconciler
from deploy_service.runner import LABEL_AGENT, LABEL_DEPLOYMENT, LABEL_MANAGED, DockerRunner
from deploy_service.runner.settings import RunnerSettings
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import Settings
from tests.factories import AuthActions
from tests.helpers import ENGINE

HTTP_AGENT = "deploy-test/http-agent:latest"
SETTINGS = replace(ENGINE, resync=1.0, stop_timeout=1.0)


class Bridged:
    """The test's view of its namespace on the engine: containers and networks."""

    def __init__(self, client: docker.DockerClient, namespace: str) -> None:
        self.client, self.namespace = client, namespace

    def containers(self, deployment_id: str) -> list[dict[str, Any]]:
        rows = self.client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={self.namespace}"})
        return [row for row in rows if row["Labels"].get(LABEL_DEPLOYMENT) == deployment_id]

    def networks(self) -> dict[str, dict[str, Any]]:
        """Name → network, for the networks labelled with this namespace."""
        rows = self.client.api.networks(filters={"label": f"{LABEL_MANAGED}={self.namespace}"})
        return {row["Name"]: row for row in rows}

    def remove_all(self) -> None:
        rows = self.client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={self.namespace}"})
        for row in rows:
            try:
                self.client.api.remove_container(row["Id"], force=True)
            except docker.errors.NotFound:
                pass
        for name in self.networks():
            try:
                self.client.api.remove_network(name)
            except docker.errors.NotFound:
                pass


@pytest.fixture()
def bridged(
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[Bridged]:
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    runner = DockerRunner(
        RunnerSettings(network_mode="bridge", namespace=namespace, docker_timeout=20, publish_host="127.0.0.1")
    )
    monkeypatch.setitem(app.extensions, RUNNER_KEY, runner)
    configure()
    reconciler = Reconciler(app, runner=runner, settings=SETTINGS)
    reconciler.start()
    view = Bridged(docker_engine, namespace)
    yield view
    reconciler.stop()
    view.remove_all()
    runner.close()


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _deploy(client: FlaskClient, headers: dict[str, str], replicas: int) -> tuple[str, str]:
    agent = client.post("/v1/agents", headers=headers, json={"name": f"a-{uuid.uuid4().hex[:8]}", "image": HTTP_AGENT})
    assert agent.status_code == 201, agent.get_json()
    agent_id = agent.get_json()["id"]
    deployment = client.post(f"/v1/agents/{agent_id}/deploy", headers=headers, json={"replicas": replicas})
    assert deployment.status_code == 202, deployment.get_json()
    return agent_id, deployment.get_json()["id"]


def _status(client: FlaskClient, headers: dict[str, str], deployment_id: str) -> str:
    return str(client.get(f"/v1/deployments/{deployment_id}", headers=headers).get_json()["status"])


def test_each_deployment_runs_on_a_labelled_network_of_its_own_removed_with_it(
    bridged: Bridged, client: FlaskClient, auth: AuthActions
) -> None:
    _, headers = auth.user()
    (agent_a, first), (agent_b, second) = _deploy(client, headers, 2), _deploy(client, headers, 2)
    for deployment_id in (first, second):
        wait_until(lambda d=deployment_id: _status(client, headers, d) == "ready", 60, what=f"{deployment_id} ready")

    networks = bridged.networks()
    own = {first: f"{bridged.namespace}-d{first}", second: f"{bridged.namespace}-d{second}"}
    assert set(networks) == set(own.values())
    for deployment_id, agent_id in ((first, agent_a), (second, agent_b)):
        network = networks[own[deployment_id]]
        assert network["Driver"] == "bridge"
        assert network["Labels"] == {
            LABEL_MANAGED: bridged.namespace,
            LABEL_DEPLOYMENT: deployment_id,
            LABEL_AGENT: agent_id,
        }
        containers = bridged.containers(deployment_id)
        assert len(containers) == 2
        for row in containers:
            data = bridged.client.api.inspect_container(row["Id"])
            assert set(data["NetworkSettings"]["Networks"]) == {own[deployment_id]}  # not the default bridge
            assert data["HostConfig"]["NetworkMode"] == own[deployment_id]
            bindings = data["HostConfig"]["PortBindings"]
            assert set(bindings) == {"8080/tcp"}
            assert [binding["HostIp"] for binding in bindings["8080/tcp"]] == ["127.0.0.1"]
            published = data["NetworkSettings"]["Ports"]["8080/tcp"]
            assert published and {binding["HostIp"] for binding in published} == {"127.0.0.1"}
    members = {
        deployment_id: set(bridged.client.api.inspect_network(own[deployment_id])["Containers"])
        for deployment_id in (first, second)
    }
    assert members[first] == {row["Id"] for row in bridged.containers(first)}
    assert members[second] == {row["Id"] for row in bridged.containers(second)}

    assert client.delete(f"/v1/deployments/{first}", headers=headers).status_code == 200
    wait_until(lambda: own[first] not in bridged.networks(), 30, what="the deleted deployment's network removed")
    assert bridged.containers(first) == []
    assert own[second] in bridged.networks()

    assert client.post(f"/v1/deployments/{second}/stop", headers=headers).status_code in (200, 202)
    wait_until(lambda: not bridged.networks(), 30, what="the stopped deployment's network removed")
    assert bridged.containers(second) == []


def test_a_labelled_network_whose_deployment_is_gone_is_swept(bridged: Bridged) -> None:
    """A network left behind (its deployment deleted while the service was down) is removed by a pass."""
    gone = f"it{uuid.uuid4().hex[:12]}"
    name = f"{bridged.namespace}-d{gone}"
    labels = {LABEL_MANAGED: bridged.namespace, LABEL_DEPLOYMENT: gone, LABEL_AGENT: "no-such-agent"}
    bridged.client.api.create_network(name, driver="bridge", labels=labels)

    wait_until(lambda: name not in bridged.networks(), 30, what="the orphaned network removed")


def test_a_network_of_another_namespace_is_left_alone(bridged: Bridged, docker_engine: docker.DockerClient) -> None:
    other = f"other-{uuid.uuid4().hex[:8]}"
    name = f"{other}-ditgone"
    docker_engine.api.create_network(
        name, driver="bridge", labels={LABEL_MANAGED: other, LABEL_DEPLOYMENT: "itgone", LABEL_AGENT: "x"}
    )
    try:
        probe = f"{bridged.namespace}-dit{uuid.uuid4().hex[:10]}"
        bridged.client.api.create_network(
            probe, driver="bridge", labels={LABEL_MANAGED: bridged.namespace, LABEL_DEPLOYMENT: "x", LABEL_AGENT: "x"}
        )
        wait_until(lambda: probe not in bridged.networks(), 30, what="a pass swept the namespace's orphan")
        assert docker_engine.api.inspect_network(name)["Name"] == name
    finally:
        docker_engine.api.remove_network(name)
