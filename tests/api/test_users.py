"""`GET /v1/users/<id>/deployed-agents` and its permission rule."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import AuthActions, make_agent, make_deployment, make_user
from tests.fakes import FakeRunner
from tests.helpers import assert_error


def test_user_lists_own_deployed_agents(
    client: FlaskClient, auth: AuthActions, app: Flask, fake_runner: FakeRunner
) -> None:
    user, headers = auth.user()
    idle = make_agent(app, user)
    live = make_agent(app, user)
    gone = make_agent(app, user)
    deployment = make_deployment(app, user, live["id"], replicas=2)
    killed = make_deployment(app, user, gone["id"])
    assert client.delete(f"/v1/deployments/{killed['id']}", headers=headers).status_code == 200
    body = client.get(f"/v1/users/{user.id}/deployed-agents", headers=headers).get_json()
    assert body["total"] == 1 and body["skip"] == 0 and body["limit"] == 50
    [item] = body["items"]
    assert item["id"] == live["id"] and item["name"] == live["name"]
    assert item["deployment"]["id"] == deployment["id"]
    assert item["deployment"]["status"] == "deploying"
    assert item["deployment"]["replicas"] == {"desired": 2, "running": 0, "ready": 0}
    assert idle["id"] not in {item["id"] for item in body["items"]}


def test_empty_until_something_is_deployed(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    make_agent(app, user)
    body = client.get(f"/v1/users/{user.id}/deployed-agents", headers=headers).get_json()
    assert body == {"items": [], "total": 0, "skip": 0, "limit": 50}


def test_other_users_are_403_admin_may_ask(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    owner = make_user(app)
    _, headers = auth.user()
    assert_error(client.get(f"/v1/users/{owner.id}/deployed-agents", headers=headers), 403, "forbidden")
    _, admin_headers = auth.admin()
    assert client.get(f"/v1/users/{owner.id}/deployed-agents", headers=admin_headers).status_code == 200
    assert_error(client.get("/v1/users/no-such-user/deployed-agents", headers=admin_headers), 404, "not_found")
    assert_error(client.get(f"/v1/users/{owner.id}/deployed-agents"), 401, "unauthorized")
