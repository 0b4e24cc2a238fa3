"""Per-agent registry credentials: `registry_auth: {username, password_secret, registry?}` naming a stored secret.

The password is a secret's value: it is checked to exist, shown by name only, used for the pull (or the
build's FROM images) and never returned. The engine side is in tests/integration/test_private_registry.py.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.reconciler import Reconciler
from deploy_service.runner.base import RegistryCredentials
from tests.factories import AuthActions, agent_payload, make_agent, make_secret, make_user
from tests.fakes import FakeRunner
from tests.helpers import Api, assert_error, converge

PASSWORD = "hunter2-registry-password"
IMAGE = "registry.example.com/team/agent:1"


def test_an_agent_takes_registry_auth_and_shows_the_secret_by_name_only(
    client: FlaskClient, auth: AuthActions, app: Flask
) -> None:
    user, headers = auth.user()
    make_secret(app, user, "registry-pass", PASSWORD)
    created = client.post(
        "/v1/agents",
        headers=headers,
        json=agent_payload(image=IMAGE, registry_auth={"username": "robot", "password_secret": "registry-pass"}),
    )
    assert created.status_code == 201, created.get_json()
    expected = {"username": "robot", "password_secret": "registry-pass", "registry": None}
    assert created.get_json()["registry_auth"] == expected
    fetched = client.get(f"/v1/agents/{created.get_json()['id']}", headers=headers)
    assert fetched.get_json()["registry_auth"] == expected
    listed = client.get("/v1/agents", headers=headers)
    for response in (created, fetched, listed):
        assert PASSWORD not in response.get_data(as_text=True)

    plain = client.post("/v1/agents", headers=headers, json=agent_payload())
    assert plain.get_json()["registry_auth"] is None


def test_registry_auth_can_be_changed_and_removed(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    make_secret(app, user, "one")
    make_secret(app, user, "two")
    agent = make_agent(app, user, image=IMAGE)
    url = f"/v1/agents/{agent['id']}"
    patched = client.patch(
        url,
        headers=headers,
        json={"registry_auth": {"username": "u", "password_secret": "two", "registry": "registry.example.com"}},
    )
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["registry_auth"] == {
        "username": "u",
        "password_secret": "two",
        "registry": "registry.example.com",
    }
    cleared = client.patch(url, headers=headers, json={"registry_auth": None})
    assert cleared.status_code == 200 and cleared.get_json()["registry_auth"] is None


def test_a_password_secret_that_does_not_exist_is_a_field_error(
    client: FlaskClient, auth: AuthActions, app: Flask
) -> None:
    user, headers = auth.user()
    other = make_user(app)
    make_secret(app, other, "theirs")
    body = agent_payload(image=IMAGE, registry_auth={"username": "u", "password_secret": "theirs"})
    error = assert_error(client.post("/v1/agents", headers=headers, json=body), 400, "validation_error")
    assert error["details"] == {"registry_auth": {"password_secret": ["No secret named 'theirs'."]}}

    agent = make_agent(app, user, image=IMAGE)
    patched = client.patch(
        f"/v1/agents/{agent['id']}",
        headers=headers,
        json={"registry_auth": {"username": "u", "password_secret": "missing"}},
    )
    error = assert_error(patched, 400, "validation_error")
    assert error["details"] == {"registry_auth": {"password_secret": ["No secret named 'missing'."]}}
    assert client.get(f"/v1/agents/{agent['id']}", headers=headers).get_json()["registry_auth"] is None


@pytest.mark.parametrize(
    ("registry_auth", "field"),
    [
        ({"password_secret": "s"}, "username"),
        ({"username": "u"}, "password_secret"),
        ({"username": "u", "password_secret": "s", "password": PASSWORD}, "password"),
        ({"username": "", "password_secret": "s"}, "username"),
        ({"username": "u\n", "password_secret": "s"}, "username"),
        ({"username": "u", "password_secret": "bad name"}, "password_secret"),
        ({"username": "u", "password_secret": "s", "registry": "https://registry.example.com"}, "registry"),
        ({"username": "u", "password_secret": "s", "registry": "-x"}, "registry"),
        ({"username": "u", "password_secret": "s", "registry": "other.example.com"}, "registry"),
    ],
)
def test_malformed_registry_auth_is_refused(
    client: FlaskClient, auth: AuthActions, app: Flask, registry_auth: dict[str, str], field: str
) -> None:
    user, headers = auth.user()
    make_secret(app, user, "s")
    body = agent_payload(image=IMAGE, registry_auth=registry_auth)
    error = assert_error(client.post("/v1/agents", headers=headers, json=body), 400, "validation_error")
    assert field in error["details"]["registry_auth"], error


def test_an_image_moved_off_the_credentials_registry_is_refused(
    client: FlaskClient, auth: AuthActions, app: Flask
) -> None:
    user, headers = auth.user()
    make_secret(app, user, "s")
    agent = make_agent(
        app,
        user,
        image=IMAGE,
        registry_auth={"username": "u", "password_secret": "s", "registry": "registry.example.com"},
    )
    moved = client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"image": "ghcr.io/acme/agent:2"})
    error = assert_error(moved, 400, "validation_error")
    assert "registry" in error["details"]["registry_auth"]


def test_a_secret_that_registry_auth_uses_cannot_be_deleted(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    secret = make_secret(app, user, "registry-pass")
    agent = make_agent(app, user, image=IMAGE, registry_auth={"username": "u", "password_secret": "registry-pass"})
    refused = client.delete(f"/v1/secrets/{secret['id']}", headers=headers)
    error = assert_error(refused, 409, "conflict")
    assert error["details"] == {"agent_ids": [agent["id"]]}
    assert "registry_auth" in error["message"]
    client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"registry_auth": None})
    assert client.delete(f"/v1/secrets/{secret['id']}", headers=headers).status_code in (200, 204)


def test_the_pull_gets_the_agents_credentials_and_a_refused_pull_fails_clearly(
    api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    assert api.post("/v1/secrets", {"name": "registry-pass", "value": PASSWORD}).status_code == 201
    assert api.post("/v1/secrets", {"name": "wrong-pass", "value": "not-it"}).status_code == 201
    right = RegistryCredentials("registry.example.com", "robot", PASSWORD)
    fake_runner.pullable[IMAGE] = right
    good = api.post(
        "/v1/agents",
        agent_payload(image=IMAGE, registry_auth={"username": "robot", "password_secret": "registry-pass"}),
    ).get_json()
    bad = api.post(
        "/v1/agents", agent_payload(image=IMAGE, registry_auth={"username": "robot", "password_secret": "wrong-pass"})
    ).get_json()
    deployed = api.post(f"/v1/agents/{bad['id']}/deploy", {}).get_json()
    converge(reconciler, api.status_is(deployed["id"], "failed"))
    assert "unauthorized" in api.deployment(deployed["id"])["error"]
    assert fake_runner.pulls == [(IMAGE, RegistryCredentials("registry.example.com", "robot", "not-it"))]

    deployed = api.post(f"/v1/agents/{good['id']}/deploy", {}).get_json()
    converge(reconciler, api.status_is(deployed["id"], "ready"))
    assert fake_runner.pulls[-1] == (IMAGE, right)
    assert PASSWORD not in repr(fake_runner.pulls) and PASSWORD not in str(api.deployment(deployed["id"]))


def test_a_build_gets_the_agents_credentials_for_its_registry(
    api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    assert api.post("/v1/secrets", {"name": "hub-pass", "value": PASSWORD}).status_code == 201
    source = {"git_url": "https://example.com/acme/agent.git"}
    agent = api.post(
        "/v1/agents",
        agent_payload(image=None, source=source, registry_auth={"username": "me", "password_secret": "hub-pass"}),
    ).get_json()
    deployed = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()
    converge(reconciler, api.status_is(deployed["id"], "ready"))
    assert fake_runner.builds[-1].registry_auth == RegistryCredentials("docker.io", "me", PASSWORD)


def test_the_spec_documents_registry_auth_without_a_password(client: FlaskClient) -> None:
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    given = schemas["RegistryAuth"]
    assert set(given["required"]) == {"username", "password_secret"}
    assert set(given["properties"]) == {"username", "password_secret", "registry"}
    assert given["additionalProperties"] is False
    assert all(field.get("description") for field in given["properties"].values())
    for name in ("AgentInput", "AgentPatch"):
        field = schemas[name]["properties"]["registry_auth"]
        assert "#/components/schemas/RegistryAuth" in str(field), field
    shown = schemas["Agent"]["properties"]["registry_auth"]
    assert "#/components/schemas/RegistryAuthInfo" in str(shown)
    assert set(schemas["RegistryAuthInfo"]["properties"]) == {"username", "password_secret", "registry"}
