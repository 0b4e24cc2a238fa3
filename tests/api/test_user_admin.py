"""An admin's management of users: list, read, change roles, deactivate; and the last active admin."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import AuthActions, make_agent
from tests.helpers import app_instances, assert_error


def test_an_admin_lists_filters_and_reads_users(client: FlaskClient, auth: AuthActions) -> None:
    admin, headers = auth.admin()
    ada, _ = auth.user(email="ada@example.com")
    reader, _ = auth.user(email="reader@example.com", role="user")
    listing = client.get("/v1/users", headers=headers).get_json()
    assert [item["id"] for item in listing["items"]] == [admin.id, ada.id, reader.id]
    assert listing["total"] == 3 and listing["skip"] == 0 and listing["limit"] == 50
    assert all("password_hash" not in item and item["is_active"] is True for item in listing["items"])
    assert [item["id"] for item in client.get("/v1/users?role=user", headers=headers).get_json()["items"]] == [
        reader.id
    ]
    assert [item["id"] for item in client.get("/v1/users?q=ADA@", headers=headers).get_json()["items"]] == [ada.id]
    assert client.get("/v1/users?q=%25", headers=headers).get_json()["total"] == 0  # a literal %, not a wildcard
    assert_error(client.get("/v1/users?role=owner", headers=headers), 400, "validation_error")
    one = client.get(f"/v1/users/{ada.id}", headers=headers)
    assert one.status_code == 200 and one.get_json()["email"] == "ada@example.com"
    assert one.get_json()["role"] == "developer"
    assert_error(client.get("/v1/users/00000000-0000-4000-8000-000000000000", headers=headers), 404, "not_found")


def test_only_an_admin_reaches_the_user_routes(client: FlaskClient, auth: AuthActions) -> None:
    developer, headers = auth.user()
    for method, path in (
        ("GET", "/v1/users"),
        ("GET", f"/v1/users/{developer.id}"),
        ("PATCH", f"/v1/users/{developer.id}"),
    ):
        body = {"role": "admin"} if method == "PATCH" else None
        assert_error(client.open(path, method=method, headers=headers, json=body), 403, "forbidden")
    assert client.get("/v1/auth/me", headers=headers).get_json()["role"] == "developer"  # not promoted


def test_roles_change_what_a_user_may_do_at_once(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    _, admin = auth.admin()
    user, headers = auth.user()
    agent = make_agent(app, user)
    body = {"name": "more", "image": "deploy-test/http-agent:1"}
    assert client.post("/v1/agents", headers=headers, json=body).status_code == 201
    changed = client.patch(f"/v1/users/{user.id}", headers=admin, json={"role": "user", "full_name": "Read Only"})
    assert changed.status_code == 200 and changed.get_json()["role"] == "user"
    assert changed.get_json()["full_name"] == "Read Only"
    # The same access token: the role is read on every request.
    assert_error(client.post("/v1/agents", headers=headers, json={**body, "name": "again"}), 403, "forbidden")
    assert_error(
        client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"description": "x"}), 403, "forbidden"
    )
    assert_error(client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={}), 403, "forbidden")
    assert_error(client.post("/v1/secrets", headers=headers, json={"name": "s", "value": "v"}), 403, "forbidden")
    assert client.get("/v1/agents", headers=headers).get_json()["total"] == 2
    assert client.get(f"/v1/agents/{agent['id']}", headers=headers).status_code == 200
    assert client.patch(f"/v1/users/{user.id}", headers=admin, json={"role": "admin"}).status_code == 200
    assert client.get("/v1/users", headers=headers).status_code == 200


def test_deactivation_ends_logins_tokens_and_agent_keys_at_once(
    client: FlaskClient, auth: AuthActions, app: Flask, make_app: Callable[..., Flask]
) -> None:
    _, admin = auth.admin()
    user, headers = auth.user()
    agent = make_agent(app, user)
    login = auth.login(user)
    refresh = {"Authorization": f"Bearer {login['refresh_token']}"}
    token = client.post("/v1/auth/api-keys", headers=headers, json={"name": "ci"}).get_json()["key"]
    key = client.post(f"/v1/agents/{agent['id']}/api-key", headers=headers, json={}).get_json()["key"]
    evaluation = {"prompt": "p", "response": "r"}
    assert client.post("/v1/evaluations", headers={"X-API-Key": key}, json=evaluation).status_code == 201
    other_worker = make_app().test_client()
    deactivated = client.patch(f"/v1/users/{user.id}", headers=admin, json={"is_active": False})
    assert deactivated.status_code == 200 and deactivated.get_json()["is_active"] is False
    for worker in (client, other_worker):
        assert_error(worker.get("/v1/agents", headers=headers), 401, "unauthorized")
        assert_error(worker.post("/v1/auth/refresh", headers=refresh), 401, "unauthorized")
        assert_error(worker.get("/v1/agents", headers={"Authorization": f"Bearer {token}"}), 401, "unauthorized")
        assert_error(worker.post("/v1/evaluations", headers={"X-API-Key": key}, json=evaluation), 401, "unauthorized")
    assert_error(
        client.post("/v1/auth/login", json={"email": user.email, "password": user.password}), 401, "unauthorized"
    )
    assert client.get("/v1/users?is_active=false", headers=admin).get_json()["items"][0]["id"] == user.id
    # Reactivated: a new login works and the agent's keys work again; old sessions and tokens stay revoked.
    assert client.patch(f"/v1/users/{user.id}", headers=admin, json={"is_active": True}).status_code == 200
    assert client.get("/v1/agents", headers=auth.headers(user)).status_code == 200
    assert client.post("/v1/evaluations", headers={"X-API-Key": key}, json=evaluation).status_code == 201
    assert_error(client.get("/v1/agents", headers=headers), 401, "unauthorized")
    assert_error(client.get("/v1/agents", headers={"Authorization": f"Bearer {token}"}), 401, "unauthorized")


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(client: FlaskClient, auth: AuthActions) -> None:
    admin, headers = auth.admin()
    for change in ({"role": "developer"}, {"role": "user"}, {"is_active": False}):
        refused = assert_error(client.patch(f"/v1/users/{admin.id}", headers=headers, json=change), 409, "conflict")
        assert refused["details"] == {"user_id": admin.id}
    assert client.get(f"/v1/users/{admin.id}", headers=headers).get_json()["role"] == "admin"  # nothing written
    assert client.patch(f"/v1/users/{admin.id}", headers=headers, json={"full_name": "Still Admin"}).status_code == 200
    second, second_headers = auth.admin()
    assert client.patch(f"/v1/users/{second.id}", headers=second_headers, json={"is_active": False}).status_code == 200
    assert_error(client.patch(f"/v1/users/{admin.id}", headers=headers, json={"role": "user"}), 409, "conflict")
    # With another active admin, the first may step down; then the other is the last.
    third, third_headers = auth.admin()
    assert client.patch(f"/v1/users/{admin.id}", headers=headers, json={"role": "developer"}).status_code == 200
    assert_error(
        client.patch(f"/v1/users/{third.id}", headers=third_headers, json={"is_active": False}), 409, "conflict"
    )


def test_bad_updates_are_400_and_write_nothing(client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.admin()
    user, _ = auth.user()
    bad: list[dict[str, Any]] = [{"role": "owner"}, {"is_active": "no"}, {"email": "x@example.com"}, {"full_name": 3}]
    for body in bad:
        assert_error(client.patch(f"/v1/users/{user.id}", headers=headers, json=body), 400, "validation_error")
    assert client.get(f"/v1/users/{user.id}", headers=headers).get_json()["role"] == "developer"


def test_default_role_is_what_registration_gives(
    client: FlaskClient, auth: AuthActions, configure: Callable[..., Any]
) -> None:
    auth.admin()  # the first account exists
    configure(DEFAULT_ROLE="user")
    made = client.post("/v1/auth/register", json={"email": "new@example.com", "password": "long-enough-pw"})
    assert made.status_code == 201 and made.get_json()["role"] == "user"


def _step_down(
    barrier: threading.Barrier,
    answers: list[int],
    worker: FlaskClient,
    headers: dict[str, str],
    target: str,
    change: dict[str, Any],
) -> None:
    barrier.wait()
    answers.append(worker.patch(f"/v1/users/{target}", headers=headers, json=change).status_code)


def test_two_admins_stepping_each_other_down_at_once_leave_one(
    client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask]
) -> None:
    """On two workers at once, each admin demotes (or deactivates) the other: one wins, the other gets 409."""
    workers = app_instances(make_app)
    for change in ({"role": "developer"}, {"is_active": False}):
        first, first_headers = auth.admin()
        second, second_headers = auth.admin()
        others = [
            user["id"]
            for user in client.get("/v1/users?role=admin&is_active=true&limit=200", headers=first_headers).get_json()[
                "items"
            ]
            if user["id"] not in (first.id, second.id)
        ]
        for other in others:  # the admins of earlier rounds step down first, so these two are the last
            assert (
                client.patch(f"/v1/users/{other}", headers=first_headers, json={"role": "developer"}).status_code == 200
            )
        barrier = threading.Barrier(2)
        answers: list[int] = []

        threads = [
            threading.Thread(target=_step_down, args=(barrier, answers, workers[0], first_headers, second.id, change)),
            threading.Thread(target=_step_down, args=(barrier, answers, workers[1], second_headers, first.id, change)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        remaining = [
            user
            for user in client.get("/v1/users?role=admin&is_active=true", headers=auth.admin()[1]).get_json()["items"]
            if user["id"] in (first.id, second.id)
        ]
        assert len(remaining) == 1, (answers, remaining)
        assert sorted(answers) in ([200, 409], [200, 401], [200, 403]), answers
