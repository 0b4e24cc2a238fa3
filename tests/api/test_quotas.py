"""Per-user quotas: agents owned, desired replicas and memory of live deployments (403 `quota_exceeded`).

Each refused request writes nothing; admins are exempt; a killed deployment counts for nothing; shrinking
is always allowed. Concurrent requests racing for the last slot are in tests/security/test_quotas.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import Agent, Deployment
from deploy_service.settings import Settings
from tests.factories import AuthActions, agent_payload
from tests.helpers import assert_error

pytestmark = pytest.mark.usefixtures("fake_runner")


def _count(app: Flask, model: Any) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model)) or 0


def _agent(client: FlaskClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/agents", headers=headers, json=agent_payload(**fields))
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _deploy(client: FlaskClient, headers: dict[str, str], agent_id: str, **body: Any) -> Any:
    return client.post("/v1/deployments", headers=headers, json={"agent_id": agent_id, **body})


def _ready(app: Flask, deployment_id: str) -> None:
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        assert deployment is not None
        deployment.status = "ready"
        db.session.commit()


def _quota_error(response: Any, quota: str, limit: int, used: int) -> dict[str, Any]:
    body = assert_error(response, 403, "quota_exceeded")
    assert body["details"] == {"quota": quota, "limit": limit, "used": used}, body
    return body


def test_an_agent_past_quota_agents_is_refused_and_not_stored(
    app: Flask, client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(QUOTA_AGENTS=2)
    _, headers = auth.user()
    _, other = auth.user()
    _agent(client, headers)
    _agent(client, headers)
    _quota_error(client.post("/v1/agents", headers=headers, json=agent_payload()), "agents", 2, 2)
    assert _count(app, Agent) == 2
    _agent(client, other)  # the quota is per user


def test_admins_are_exempt(
    app: Flask, client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(QUOTA_AGENTS=1, QUOTA_REPLICAS=1, QUOTA_MEMORY_MB=100)
    _, headers = auth.admin()
    first = _agent(client, headers)
    _agent(client, headers)
    response = _deploy(client, headers, first["id"], replicas=3)
    assert response.status_code == 202, response.get_json()


def test_a_deploy_past_quota_replicas_is_refused_and_writes_nothing(
    app: Flask, client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(QUOTA_REPLICAS=3)
    _, headers = auth.user()
    first, second = _agent(client, headers), _agent(client, headers)
    deployed = _deploy(client, headers, first["id"], replicas=2)
    assert deployed.status_code == 202
    _quota_error(_deploy(client, headers, second["id"], replicas=2), "replicas", 3, 2)
    assert _count(app, Deployment) == 1
    by_agent = client.post(f"/v1/agents/{second['id']}/deploy", headers=headers, json={"replicas": 2})
    _quota_error(by_agent, "replicas", 3, 2)
    in_body = client.post("/v1/agents/deploy", headers=headers, json={"agent_id": second["id"], "replicas": 2})
    _quota_error(in_body, "replicas", 3, 2)
    assert _count(app, Deployment) == 1
    assert _deploy(client, headers, second["id"], replicas=1).status_code == 202  # exactly at the limit


def test_a_killed_deployment_frees_its_share(
    app: Flask, client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(QUOTA_REPLICAS=2)
    _, headers = auth.user()
    first, second = _agent(client, headers), _agent(client, headers)
    deployment = _deploy(client, headers, first["id"], replicas=2).get_json()
    _quota_error(_deploy(client, headers, second["id"]), "replicas", 2, 2)
    assert client.delete(f"/v1/deployments/{deployment['id']}", headers=headers).status_code == 200
    assert _deploy(client, headers, second["id"], replicas=2).status_code == 202


def test_memory_counts_replicas_times_the_resolved_memory(
    app: Flask, client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(QUOTA_MEMORY_MB=1000)
    _, headers = auth.user()
    first = _agent(client, headers, resources={"memory_mb": 256})
    second = _agent(client, headers, resources={"memory_mb": 256})
    assert _deploy(client, headers, first["id"], replicas=3).status_code == 202
    _quota_error(_deploy(client, headers, second["id"]), "memory_mb", 1000, 768)
    overridden = _deploy(client, headers, second["id"], resources={"memory_mb": 300})
    _quota_error(overridden, "memory_mb", 1000, 768)
    assert _count(app, Deployment) == 1
    assert _deploy(client, headers, second["id"], resources={"memory_mb": 232}).status_code == 202


def test_scaling_past_the_quota_is_refused_and_scaling_down_always_allowed(
    app: Flask, client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(QUOTA_REPLICAS=3)
    _, headers = auth.user()
    agent = _agent(client, headers)
    deployment = _deploy(client, headers, agent["id"]).get_json()
    _ready(app, deployment["id"])
    scale = f"/v1/deployments/{deployment['id']}/scale"
    assert client.post(scale, headers=headers, json={"replicas": 3}).status_code == 202
    _quota_error(client.post(scale, headers=headers, json={"replicas": 4}), "replicas", 3, 3)
    assert client.get(f"/v1/deployments/{deployment['id']}", headers=headers).get_json()["replicas"]["desired"] == 3
    configure(QUOTA_REPLICAS=1)  # lowered under what runs: shrinking still works
    assert client.post(scale, headers=headers, json={"replicas": 2}).status_code == 202


def test_a_restart_that_raises_memory_past_the_quota_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(QUOTA_MEMORY_MB=1000)
    _, headers = auth.user()
    agent = _agent(client, headers, resources={"memory_mb": 256})
    deployment = _deploy(client, headers, agent["id"], replicas=2).get_json()
    _ready(app, deployment["id"])
    patched = client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"resources": {"memory_mb": 600}})
    assert patched.status_code == 200
    for path in (f"/v1/deployments/{deployment['id']}/restart", f"/v1/agents/{agent['id']}/restart"):
        _quota_error(client.post(path, headers=headers), "memory_mb", 1000, 512)
    after = client.get(f"/v1/deployments/{deployment['id']}", headers=headers).get_json()
    assert (after["generation"], after["config"]["resources"]["memory_mb"]) == (1, 256)
    client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"resources": {"memory_mb": 500}})
    assert client.post(f"/v1/agents/{agent['id']}/restart", headers=headers).status_code == 202


QUOTA_OPERATIONS = (
    "createAgent",
    "createDeployment",
    "deployAgentFromBody",
    "deployAgent",
    "scaleDeployment",
    "restartDeployment",
    "restartAgent",
)


def test_the_spec_documents_quota_exceeded_beside_forbidden(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    operations = {
        operation["operationId"]: operation
        for path in spec["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    for name in QUOTA_OPERATIONS:
        description = operations[name]["responses"]["403"]["description"]
        assert "`quota_exceeded`" in description and "`forbidden`" in description, (name, description)
    assert "quota_exceeded" not in operations["listAgents"]["responses"]["403"]["description"]
