"""`GET /v1/secrets/<id>` (metadata and `used_by`) and `PUT /v1/secrets/<id>` (rotation in place).

The new value reaches what starts next (a restart is a new release whose `changes` say `rotated`); what
runs keeps its environment until then. On the in-memory runner, the environment each replica was started
with is its spec's; tests/integration/test_secret_rotation_engine.py shows it in a real container.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from deploy_service.reconciler import Reconciler
from tests.factories import AuthActions, make_secret
from tests.fakes import FakeRunner
from tests.helpers import Api, assert_error, converge, deploy, new_agent


def _owner(api: Api) -> Any:
    me = api.get("/v1/auth/me").get_json()
    return type("Owner", (), {"id": me["id"]})


def _running_env(fake_runner: FakeRunner, deployment_id: str) -> list[str | None]:
    return [
        container.spec.env.get("TOKEN")
        for container in fake_runner.containers.values()
        if container.spec.deployment_id == deployment_id and container.info.state == "running"
    ]


def test_get_shows_metadata_and_used_by_never_the_value(app: Flask, api: Api, auth: AuthActions) -> None:
    secret = make_secret(app, _owner(api), name="token", value="value-one-s3cr3t")
    login = make_secret(app, _owner(api), name="registry-pw", value="pw-s3cr3t")
    injecting = new_agent(app, api, secrets={"TOKEN": "token"})
    new_agent(app, api)  # references nothing
    body = api.get(f"/v1/secrets/{secret['id']}")
    assert body.status_code == 200
    detail = body.get_json()
    assert detail["used_by"] == [injecting["id"]] and detail["name"] == "token"
    assert set(detail) == {"id", "name", "created_at", "updated_at", "used_by"}
    assert "s3cr3t" not in body.get_data(as_text=True)
    assert api.get(f"/v1/secrets/{login['id']}").get_json()["used_by"] == []
    _, stranger = auth.user()
    assert_error(api.client.get(f"/v1/secrets/{secret['id']}", headers=stranger), 404, "not_found")
    assert_error(api.client.put(f"/v1/secrets/{secret['id']}", headers=stranger, json={"value": "x"}), 404, "not_found")


def test_rotation_reaches_the_next_release_and_shows_in_its_changes(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    secret = make_secret(app, _owner(api), name="token", value="value-one")
    agent = new_agent(app, api, secrets={"TOKEN": "token"})
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert _running_env(fake_runner, deployment["id"]) == ["value-one"]
    before = api.get(f"/v1/secrets/{secret['id']}").get_json()
    rotated = api.client.put(f"/v1/secrets/{secret['id']}", headers=api.headers, json={"value": "value-two"})
    assert rotated.status_code == 200, rotated.get_json()
    assert rotated.get_json()["used_by"] == [agent["id"]]
    assert rotated.get_json()["updated_at"] > before["updated_at"]
    assert "value-two" not in rotated.get_data(as_text=True)
    reconciler.run_once()
    assert _running_env(fake_runner, deployment["id"]) == ["value-one"]  # nothing running is touched
    restarted = api.post(f"/v1/deployments/{deployment['id']}/restart")
    assert restarted.status_code == 202 and restarted.get_json()["revision"] == 2  # a rotation is a change
    converge(reconciler, lambda: _running_env(fake_runner, deployment["id"]) == ["value-two"])
    release = api.get(f"/v1/deployments/{deployment['id']}/releases/2").get_json()
    assert release["changes"] == [{"field": "secrets.token", "from": None, "to": "rotated"}]
    assert "secret_versions" not in release["config"]
    assert "secret_versions" not in api.deployment(deployment["id"])["config"]
    # A restart after that changes nothing again: no release.
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 2
    # A rollback to release 1 runs today's value: it never undoes a rotation, and its release says so.
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.post(f"/v1/deployments/{deployment['id']}/rollback", {"release": 1}).status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert _running_env(fake_runner, deployment["id"]) == ["value-two"]
    rollback = api.get(f"/v1/deployments/{deployment['id']}/releases/3").get_json()
    assert rollback["rollback_of"] == 1 and rollback["changes"] == []


def test_bad_rotations_are_400_and_change_nothing(app: Flask, api: Api) -> None:
    secret = make_secret(app, _owner(api), name="token", value="value-one")
    before = api.get(f"/v1/secrets/{secret['id']}").get_json()
    for body in ({}, {"value": ""}, {"value": 3}, {"value": "v", "name": "renamed"}):
        assert_error(
            api.client.put(f"/v1/secrets/{secret['id']}", headers=api.headers, json=body), 400, "validation_error"
        )
    assert api.get(f"/v1/secrets/{secret['id']}").get_json() == before
    assert_error(api.client.put("/v1/secrets/nope", headers=api.headers, json={"value": "v"}), 404, "not_found")
