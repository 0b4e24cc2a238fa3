"""Host networking is refused in production unless `HOST_NETWORK_ALLOWED=true`.

The attack: a multi-tenant service whose replicas share the host's network namespace. Any tenant's agent
can then reach every port of the host (the service itself, its database if local, the engine's TCP port)
and every other tenant's replicas. What the service does: in production (`ENVIRONMENT=production`) an
explicit `DOCKER_NETWORK_MODE=host`, or `RUNNER=swarm` (which always uses host networking), is a
`ConfigError` at start unless `HOST_NETWORK_ALLOWED=true` says the service is single-tenant; `auto`,
which resolves on the engine (host when it has no `bridge` network), makes the docker runner refuse to
start any replica: the deployment fails with the reason, and `/health/ready`'s engine check says it.
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

from deploy_service.config import load_config
from deploy_service.reconciler import Reconciler
from deploy_service.runner import LABEL_MANAGED, DockerRunner, RunnerConfigError, SwarmRunner
from deploy_service.runner.settings import RunnerSettings
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import ConfigError, Settings, settings_from
from tests.factories import AuthActions
from tests.helpers import ENGINE

HTTP_AGENT = "deploy-test/http-agent:latest"
PRODUCTION = {"ENVIRONMENT": "production", "SECRET_KEY": "s" * 40}


@pytest.mark.parametrize(
    "overrides",
    [{"DOCKER_NETWORK_MODE": "host"}, {"RUNNER": "swarm"}, {"RUNNER": "swarm", "DOCKER_NETWORK_MODE": "host"}],
)
def test_production_refuses_to_start_with_host_networking(overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="HOST_NETWORK_ALLOWED"):
        settings_from(load_config({**PRODUCTION, **overrides}))


@pytest.mark.parametrize("overrides", [{"DOCKER_NETWORK_MODE": "host"}, {"RUNNER": "swarm"}])
def test_host_networking_starts_when_allowed_or_outside_production(overrides: dict[str, str]) -> None:
    allowed = settings_from(load_config({**PRODUCTION, **overrides, "HOST_NETWORK_ALLOWED": "true"}))
    development = settings_from(load_config(overrides))

    assert allowed.runner.host_network_allowed and development.runner.host_network_allowed


def test_production_with_auto_or_bridge_starts_but_allows_no_host_networking() -> None:
    for mode in ("auto", "bridge"):
        settings = settings_from(load_config({**PRODUCTION, "DOCKER_NETWORK_MODE": mode}))
        assert settings.runner.host_network_allowed is False


def test_the_swarm_runner_refuses_settings_without_host_networking() -> None:
    with pytest.raises(RunnerConfigError, match="HOST_NETWORK_ALLOWED"):
        SwarmRunner(RunnerSettings(backend="swarm", host_network_allowed=False))


SETTINGS = replace(ENGINE, resync=1.0, stop_timeout=1.0, workers=4)


@pytest.fixture()
def refusing(
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[str]:
    """The app on the real engine with `auto` and host networking not allowed (as in production)."""
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    runner = DockerRunner(RunnerSettings(network_mode="auto", namespace=namespace, host_network_allowed=False))
    monkeypatch.setitem(app.extensions, RUNNER_KEY, runner)
    configure()
    reconciler = Reconciler(app, runner=runner, settings=SETTINGS)
    reconciler.start()
    yield namespace
    reconciler.stop()
    for row in docker_engine.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={namespace}"}):
        docker_engine.api.remove_container(row["Id"], force=True)
    runner.close()


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_auto_resolving_to_host_fails_the_deployment_and_readiness_says_why(
    refusing: str, docker_engine: docker.DockerClient, client: FlaskClient, auth: AuthActions
) -> None:
    """This engine has no `bridge` network, so `auto` resolves to host networking: nothing may start."""
    _, headers = auth.user()
    agent = client.post("/v1/agents", headers=headers, json={"name": "shared", "image": HTTP_AGENT})
    assert agent.status_code == 201, agent.get_json()
    deployment = client.post(f"/v1/agents/{agent.get_json()['id']}/deploy", headers=headers, json={"replicas": 1})
    assert deployment.status_code == 202, deployment.get_json()
    url = f"/v1/deployments/{deployment.get_json()['id']}"

    failed = _wait_for(
        lambda: (body := client.get(url, headers=headers).get_json())["status"] == "failed" and body, 30, "failed"
    )
    assert "HOST_NETWORK_ALLOWED" in failed["error"]
    assert docker_engine.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={refusing}"}) == []

    ready = client.get("/health/ready")
    assert ready.status_code == 503
    engine = ready.get_json()["checks"]["engine"]
    assert engine["status"] == "error" and "HOST_NETWORK_ALLOWED" in engine["error"]
