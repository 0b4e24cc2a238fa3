"""Secret rotation on the real engine: `PUT /v1/secrets/<id>` reaches the environment of the next container.

The running containers keep the value they were started with; a restart after the rotation is release 2
(`changes`: `secrets.<name>: rotated`), and the containers it starts carry the new value in their
environment, as the engine reports it (`docker inspect`). Both runners: the docker runner starts
containers itself, Swarm gets the new value in the service's task template.
"""

from __future__ import annotations

import docker
from flask import Flask

from tests.factories import make_secret
from tests.integration.test_deployments_engine import (
    BOTH_RUNNERS,
    FAST_HEALTH,
    Client,
    Engine,
    api,
    engine,
    status_is,
    wait_until,
)

__all__ = ["api", "engine"]  # fixtures, used by name


def _tokens(engine: Engine, deployment_id: str) -> set[str]:
    """The `TOKEN` each of the deployment's containers was started with."""
    found = set()
    for container in engine.containers(deployment_id):
        try:
            env = engine.inspect(container.id).attrs["Config"]["Env"]
        except docker.errors.NotFound:  # removed by a rollout between the list and the inspect
            continue
        found |= {entry.split("=", 1)[1] for entry in env if entry.startswith("TOKEN=")}
    return found


@BOTH_RUNNERS
def test_a_rotated_secret_reaches_the_containers_of_the_next_release(api: Client, engine: Engine, app: Flask) -> None:
    me = api.call("get", "/v1/auth/me").get_json()
    secret = make_secret(app, type("Owner", (), {"id": me["id"]}), name="agent-token", value="first-value")  # type: ignore[arg-type]
    agent_id = api.agent(health_check=FAST_HEALTH, secrets={"TOKEN": "agent-token"})
    deployment_id = api.deploy(agent_id, replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    assert _tokens(engine, deployment_id) == {"first-value"}

    rotated = api.call("put", f"/v1/secrets/{secret['id']}", {"value": "second-value"})
    assert rotated.status_code == 200 and rotated.get_json()["used_by"] == [agent_id]
    assert _tokens(engine, deployment_id) == {"first-value"}  # nothing running is touched

    restarted = api.call("post", f"/v1/deployments/{deployment_id}/restart")
    assert restarted.status_code == 202 and restarted.get_json()["revision"] == 2

    def rolled() -> bool:
        return api.deployment(deployment_id)["status"] == "ready" and _tokens(engine, deployment_id) == {"second-value"}

    wait_until(rolled, timeout=60, what="the new value in every container")
    assert len(engine.containers(deployment_id)) == 2
    release = api.call("get", f"/v1/deployments/{deployment_id}/releases/2").get_json()
    assert release["changes"] == [{"field": "secrets.agent-token", "from": None, "to": "rotated"}]
    for body in (release, api.deployment(deployment_id)):
        assert "second-value" not in str(body) and "first-value" not in str(body)
