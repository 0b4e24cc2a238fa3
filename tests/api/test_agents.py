"""Agent CRUD, validation, scoping, filters and pagination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import Agent
from deploy_service.settings import Settings
from tests.factories import AuthActions, agent_payload, make_agent, make_deployment, make_secret, make_user
from tests.fakes import FakeRunner
from tests.helpers import assert_error


def count_agents(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Agent)) or 0


def test_create_image_agent_with_defaults(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    response = client.post("/v1/agents", headers=headers, json={"name": "Support bot", "image": "ghcr.io/acme/bot:1.2"})
    assert response.status_code == 201
    agent = response.get_json()
    assert agent["owner_id"] == user.id
    assert agent["status"] == "idle"
    assert agent["image"] == "ghcr.io/acme/bot:1.2" and agent["source"] is None
    assert agent["port"] == 8080 and agent["invoke_path"] == "/invoke"
    assert agent["env"] == {} and agent["secrets"] == {}
    assert agent["resources"] == {
        "cpu": app.config["AGENT_DEFAULT_CPU"],
        "memory_mb": app.config["AGENT_DEFAULT_MEMORY_MB"],
    }
    assert agent["read_only_rootfs"] is True
    assert agent["run_as_user"] is None
    assert agent["created_at"].endswith(("Z", "+00:00"))
    assert client.get(f"/v1/agents/{agent['id']}", headers=headers).get_json() == agent


def test_create_git_agent_fills_source_defaults(client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.user()
    response = client.post(
        "/v1/agents",
        headers=headers,
        json={
            "name": "from-git",
            "source": {"git_url": "https://github.com/acme/agent.git"},
            "health_check": {"path": "/healthz"},
            "command": ["python", "main.py"],
            "env": {"MODE": "fast"},
            "resources": {"cpu": 1.5},
        },
    )
    assert response.status_code == 201, response.get_json()
    agent = response.get_json()
    assert agent["image"] is None
    assert agent["source"] == {
        "git_url": "https://github.com/acme/agent.git",
        "branch": "main",
        "dockerfile": "Dockerfile",
        "context": ".",
    }
    assert agent["health_check"] == {"path": "/healthz", "interval_seconds": 10.0, "timeout_seconds": 5.0, "retries": 3}
    assert agent["command"] == ["python", "main.py"]
    assert agent["resources"]["cpu"] == 1.5


def test_an_empty_health_check_is_one_with_every_default(client: FlaskClient, auth: AuthActions) -> None:
    """`{}` asks for the health check with its defaults (as the spec's response says), not for none."""
    _, headers = auth.user()
    defaults = {"path": "/health", "interval_seconds": 10.0, "timeout_seconds": 5.0, "retries": 3}
    created = client.post("/v1/agents", headers=headers, json={**agent_payload(), "health_check": {}})
    assert created.status_code == 201, created.get_json()
    agent = created.get_json()
    assert agent["health_check"] == defaults
    patched = client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"health_check": None})
    assert patched.get_json()["health_check"] is None
    patched = client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"health_check": {}})
    assert patched.get_json()["health_check"] == defaults


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "ghcr.io/acme/agent:v1.0-rc.1",
        "registry.example.com:5000/team/agent",
        "registry.example.com/a/b/c@sha256:" + "a" * 64,
    ],
)
def test_valid_image_references(client: FlaskClient, auth: AuthActions, image: str) -> None:
    _, headers = auth.user()
    assert client.post("/v1/agents", headers=headers, json=agent_payload(image=image)).status_code == 201


@pytest.mark.parametrize(
    "image",
    [
        "",
        "Upper",
        "acme/Agent",
        "-rm",
        "busybox:",
        "busybox:-bad",
        "a b",
        "busybox;rm -rf /",
        "--privileged",
        "x" * 600,
    ],
)
def test_invalid_image_references(client: FlaskClient, auth: AuthActions, app: Flask, image: str) -> None:
    _, headers = auth.user()
    error = assert_error(
        client.post("/v1/agents", headers=headers, json=agent_payload(image=image)), 400, "validation_error"
    )
    assert "image" in error["details"]
    assert count_agents(app) == 0


UNSAFE_GIT_URLS = [
    "ext::sh -c touch% /tmp/pwned",
    "--upload-pack=touch /tmp/pwned",
    "-uanything",
    "file:///tmp/repo",
    "/tmp/repo",
    "http://github.com/acme/agent.git",
    "ssh://git@github.com/acme/agent.git",
    "git://github.com/acme/agent.git",
    "git@github.com:acme/agent.git",
    "https://user:token@github.com/acme/agent.git",
    "https://github.com",
    "https://-oProxyCommand=x/repo",
    "https://github.com/acme/agent.git\n--upload-pack=x",
]
"""Git URLs that would run something, reach the local filesystem or carry credentials (the injection set);
tests/api/test_deploy_from_source.py sends them to `POST /v1/deployments` too."""
UNSAFE_BRANCHES = [
    "-b",
    "--upload-pack=x",
    "main..dev",
    "feature~1",
    "a b",
    "x.lock",
    "refs/heads/",
    ".hidden",
    "a@{1}",
    "a:b",
    "",
]
"""Branch names git would read as an option, or refuses."""


@pytest.mark.parametrize("git_url", UNSAFE_GIT_URLS)
def test_unsafe_git_urls_are_refused(client: FlaskClient, auth: AuthActions, app: Flask, git_url: str) -> None:
    _, headers = auth.user()
    payload = agent_payload(image=None, source={"git_url": git_url})
    error = assert_error(client.post("/v1/agents", headers=headers, json=payload), 400, "validation_error")
    assert "git_url" in error["details"]["source"]
    assert count_agents(app) == 0


@pytest.mark.parametrize("branch", UNSAFE_BRANCHES)
def test_unsafe_branches_are_refused(client: FlaskClient, auth: AuthActions, branch: str) -> None:
    _, headers = auth.user()
    payload = agent_payload(image=None, source={"git_url": "https://github.com/acme/a.git", "branch": branch})
    error = assert_error(client.post("/v1/agents", headers=headers, json=payload), 400, "validation_error")
    assert "branch" in error["details"]["source"]


@pytest.mark.parametrize("path_field", ["dockerfile", "context"])
@pytest.mark.parametrize("value", ["../outside", "/etc/passwd", "-f", "a/../../b"])
def test_build_paths_stay_inside_the_repository(
    client: FlaskClient, auth: AuthActions, path_field: str, value: str
) -> None:
    _, headers = auth.user()
    payload = agent_payload(image=None, source={"git_url": "https://github.com/acme/a.git", path_field: value})
    error = assert_error(client.post("/v1/agents", headers=headers, json=payload), 400, "validation_error")
    assert path_field in error["details"]["source"]


def test_local_git_sources_need_the_flag(
    client: FlaskClient,
    auth: AuthActions,
    configure: Callable[..., Settings],
) -> None:
    _, headers = auth.user()
    payload = agent_payload(image=None, source={"git_url": "file:///srv/repos/agent", "branch": "feature/x"})
    assert_error(client.post("/v1/agents", headers=headers, json=payload), 400, "validation_error")
    configure(ALLOW_LOCAL_GIT_SOURCES=True)
    response = client.post("/v1/agents", headers=headers, json=payload)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["source"]["branch"] == "feature/x"
    traversal = agent_payload(image=None, source={"git_url": "file:///srv/../etc"})
    assert_error(client.post("/v1/agents", headers=headers, json=traversal), 400, "validation_error")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"BAD-NAME": "x"}}, "env"),
        ({"env": {"PORT": "9000"}}, "env"),
        ({"env": {"REPLICA_INDEX": "1"}}, "env"),
        ({"env": {"OK": 1}}, "env"),
        ({"secrets": {"bad name": "x"}}, "secrets"),
        ({"resources": {"cpu": 1000}}, "resources"),
        ({"resources": {"memory_mb": 10_000_000}}, "resources"),
        ({"resources": {"cpu": 0}}, "resources"),
        ({"resources": {"gpu": 1}}, "resources"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "8080"}, "port"),
        ({"port": 8080.5}, "port"),
        ({"port": True}, "port"),
        ({"invoke_path": "invoke"}, "invoke_path"),
        ({"health_check": {"path": "/h", "interval_seconds": -1}}, "health_check"),
        ({"name": ""}, "name"),
        ({"name": "-dash-first"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"command": []}, "command"),
        ({"command": "python main.py"}, "command"),
        ({"source": {"git_url": "https://github.com/a/b.git"}}, "image"),
        ({"image": None}, "image"),
        ({"status": "deployed"}, "status"),
        ({"owner_id": "someone"}, "owner_id"),
        ({"privileged": True}, "privileged"),
        *[
            ({"run_as_user": value}, "run_as_user")
            for value in ["0", "0:0", "root", "nobody", "00", "+0", "-1", "01000", "1000:", "1000:staff", ""]
        ],
        ({"run_as_user": "2147483648"}, "run_as_user"),
        ({"run_as_user": "1000:2147483648"}, "run_as_user"),
        ({"run_as_user": 1000}, "run_as_user"),
    ],
)
def test_agent_validation(
    client: FlaskClient, auth: AuthActions, app: Flask, changes: dict[str, Any], field: str
) -> None:
    _, headers = auth.user()
    error = assert_error(
        client.post("/v1/agents", headers=headers, json=agent_payload(**changes)), 400, "validation_error"
    )
    assert field in error["details"], error
    assert count_agents(app) == 0


def test_run_as_user_is_a_non_zero_numeric_user(client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.user()
    created = client.post("/v1/agents", headers=headers, json=agent_payload(run_as_user="1000:0"))
    assert created.status_code == 201, created.get_json()
    agent = created.get_json()
    assert agent["run_as_user"] == "1000:0"

    path = f"/v1/agents/{agent['id']}"
    for value in ["2147483647", None]:
        patched = client.patch(path, headers=headers, json={"run_as_user": value})
        assert patched.status_code == 200, patched.get_json()
        assert patched.get_json()["run_as_user"] == value
    refused = assert_error(client.patch(path, headers=headers, json={"run_as_user": "0"}), 400, "validation_error")
    assert "run_as_user" in refused["details"]
    assert client.get(path, headers=headers).get_json()["run_as_user"] is None


def test_env_and_secrets_may_not_set_the_same_variable(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    make_secret(app, user, "token")
    payload = agent_payload(env={"TOKEN": "plain"}, secrets={"TOKEN": "token"})
    assert_error(client.post("/v1/agents", headers=headers, json=payload), 400, "validation_error")


def test_an_integer_may_be_written_with_a_zero_fraction(client: FlaskClient, auth: AuthActions) -> None:
    """JSON Schema (OpenAPI 3.1) counts 8080.0 as an integer; it is stored as 8080."""
    _, headers = auth.user()
    payload = agent_payload(port=8080.0, health_check={"path": "/h", "retries": 5.0})
    response = client.post("/v1/agents", headers=headers, json=payload)
    assert response.status_code == 201, response.get_json()
    agent = response.get_json()
    assert agent["port"] == 8080 and isinstance(agent["port"], int)
    assert agent["health_check"]["retries"] == 5 and isinstance(agent["health_check"]["retries"], int)


@pytest.mark.parametrize(
    "changes",
    [{"description": "a\x00b"}, {"env": {"A": "x\x00"}}, {"command": ["run", "\x00"]}],
)
def test_nul_characters_are_refused_on_every_database(
    client: FlaskClient, auth: AuthActions, changes: dict[str, Any]
) -> None:
    """PostgreSQL cannot store NUL in text or JSONB: refused up front (400), never a 500, on both databases."""
    _, headers = auth.user()
    error = assert_error(
        client.post("/v1/agents", headers=headers, json=agent_payload(**changes)), 400, "validation_error"
    )
    assert error["details"] == {next(iter(changes)): ["Must not contain NUL characters."]}
    assert client.get("/v1/agents", headers=headers).get_json()["total"] == 0


def test_secret_references_must_exist_and_be_mine(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    other = make_user(app)
    make_secret(app, other, "theirs")
    make_secret(app, user, "mine")
    error = assert_error(
        client.post("/v1/agents", headers=headers, json=agent_payload(secrets={"A": "mine", "B": "theirs"})),
        404,
        "not_found",
    )
    assert error["message"] == "No secret named 'theirs'."
    assert error["details"] == {"secrets": {"B": "No secret named 'theirs'."}}
    agent = client.post("/v1/agents", headers=headers, json=agent_payload(name="later")).get_json()
    # On the agent's own URL a 404 would say the agent is gone: there a missing secret is a conflict.
    patched = client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"secrets": {"A": "x", "B": "y"}})
    error = assert_error(patched, 409, "conflict")
    assert error["details"] == {"secrets": {"A": "No secret named 'x'.", "B": "No secret named 'y'."}}
    assert client.get(f"/v1/agents/{agent['id']}", headers=headers).get_json()["secrets"] == {}
    response = client.post("/v1/agents", headers=headers, json=agent_payload(secrets={"A": "mine"}))
    assert response.status_code == 201
    assert response.get_json()["secrets"] == {"A": "mine"}


def test_name_is_unique_per_owner(client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.user()
    _, other_headers = auth.user()
    assert client.post("/v1/agents", headers=headers, json=agent_payload(name="bot")).status_code == 201
    assert_error(client.post("/v1/agents", headers=headers, json=agent_payload(name="bot")), 409, "conflict")
    assert client.post("/v1/agents", headers=other_headers, json=agent_payload(name="bot")).status_code == 201


def test_patch_replaces_given_fields(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    agent = make_agent(app, user, env={"A": "1"}, description="old")
    response = client.patch(
        f"/v1/agents/{agent['id']}",
        headers=headers,
        json={"description": "new", "env": {"B": "2"}, "resources": {"memory_mb": 256}},
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["description"] == "new"
    assert body["env"] == {"B": "2"}
    assert body["resources"] == {"cpu": app.config["AGENT_DEFAULT_CPU"], "memory_mb": 256}
    assert body["name"] == agent["name"]
    assert body["updated_at"] >= body["created_at"]


def test_patch_switches_between_image_and_source(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    agent = make_agent(app, user)
    url = f"/v1/agents/{agent['id']}"
    to_git = client.patch(url, headers=headers, json={"source": {"git_url": "https://github.com/a/b.git"}}).get_json()
    assert to_git["image"] is None and to_git["source"]["branch"] == "main"
    to_image = client.patch(url, headers=headers, json={"image": "busybox:1.36"}).get_json()
    assert to_image["image"] == "busybox:1.36" and to_image["source"] is None
    # The body is valid; it conflicts with the stored agent (it would have neither image nor source).
    assert_error(client.patch(url, headers=headers, json={"image": None}), 409, "conflict")
    assert_error(
        client.patch(
            url, headers=headers, json={"image": "busybox", "source": {"git_url": "https://github.com/a/b.git"}}
        ),
        400,
        "validation_error",
    )
    assert_error(client.patch(url, headers=headers, json={"id": "new-id"}), 400, "validation_error")
    assert client.get(url, headers=headers).get_json()["image"] == "busybox:1.36"


def test_patch_name_conflict_and_env_overlap(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    make_secret(app, user, "tok")
    first = make_agent(app, user, name="first")
    second = make_agent(app, user, name="second", secrets={"TOKEN": "tok"})
    assert_error(client.patch(f"/v1/agents/{second['id']}", headers=headers, json={"name": "first"}), 409, "conflict")
    assert_error(  # the stored secrets already set TOKEN: a conflict with the agent, not a bad body
        client.patch(f"/v1/agents/{second['id']}", headers=headers, json={"env": {"TOKEN": "x"}}),
        409,
        "conflict",
    )
    assert_error(  # both in one body: the body itself is wrong
        client.patch(f"/v1/agents/{second['id']}", headers=headers, json={"env": {"A": "x"}, "secrets": {"A": "tok"}}),
        400,
        "validation_error",
    )
    assert client.patch(f"/v1/agents/{first['id']}", headers=headers, json={"name": "first"}).status_code == 200


def test_delete_agent(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    agent = make_agent(app, user)
    response = client.delete(f"/v1/agents/{agent['id']}", headers=headers)
    assert response.status_code == 204
    assert_error(client.get(f"/v1/agents/{agent['id']}", headers=headers), 404, "not_found")
    assert_error(client.delete(f"/v1/agents/{agent['id']}", headers=headers), 404, "not_found")


def test_delete_agent_with_live_deployment_is_409(
    client: FlaskClient, auth: AuthActions, app: Flask, fake_runner: FakeRunner
) -> None:
    user, headers = auth.user()
    agent = make_agent(app, user)
    deployment = make_deployment(app, user, agent["id"])
    error = assert_error(client.delete(f"/v1/agents/{agent['id']}", headers=headers), 409, "conflict")
    assert error["details"]["deployment_id"] == deployment["id"]
    assert count_agents(app) == 1
    assert client.delete(f"/v1/deployments/{deployment['id']}", headers=headers).status_code == 200
    assert client.delete(f"/v1/agents/{agent['id']}", headers=headers).status_code == 204


def test_other_users_agents_are_404(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    owner = make_user(app)
    agent = make_agent(app, owner)
    _, headers = auth.user()
    url = f"/v1/agents/{agent['id']}"
    missing = assert_error(
        client.get("/v1/agents/00000000-0000-0000-0000-000000000000", headers=headers), 404, "not_found"
    )
    for response in (
        client.get(url, headers=headers),
        client.patch(url, headers=headers, json={"description": "mine now"}),
        client.delete(url, headers=headers),
    ):
        assert assert_error(response, 404, "not_found")["message"] == missing["message"]
    assert client.get("/v1/agents", headers=headers).get_json()["total"] == 0


def test_admin_sees_and_manages_all_agents(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    owner = make_user(app)
    agent = make_agent(app, owner)
    _, admin_headers = auth.admin()
    assert client.get(f"/v1/agents/{agent['id']}", headers=admin_headers).status_code == 200
    listing = client.get("/v1/agents", headers=admin_headers).get_json()
    assert [item["id"] for item in listing["items"]] == [agent["id"]]
    by_owner = client.get(f"/v1/agents?owner_id={owner.id}", headers=admin_headers).get_json()
    assert by_owner["total"] == 1
    response = client.patch(f"/v1/agents/{agent['id']}", headers=admin_headers, json={"description": "by admin"})
    assert response.status_code == 200
    assert response.get_json()["owner_id"] == owner.id


def test_list_filters_and_pagination(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    names = ["alpha-bot", "beta-bot", "Gamma", "delta_100%", "epsilon"]
    ids = [make_agent(app, user, name=name)["id"] for name in names]
    with app.app_context():
        db.session.get(Agent, ids[1]).status = "stopped"
        db.session.commit()

    page = client.get("/v1/agents?limit=2", headers=headers).get_json()
    assert page["total"] == 5 and page["skip"] == 0 and page["limit"] == 2
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    second = client.get("/v1/agents?limit=2&skip=2", headers=headers).get_json()
    assert [item["id"] for item in second["items"]] == ids[::-1][2:4]
    beyond = client.get("/v1/agents?skip=10", headers=headers).get_json()
    assert beyond["items"] == [] and beyond["total"] == 5
    assert client.get("/v1/agents?limit=1000", headers=headers).get_json()["limit"] == 200
    assert_error(client.get("/v1/agents?limit=0", headers=headers), 400, "validation_error")

    by_q = client.get("/v1/agents?q=BOT", headers=headers).get_json()
    assert {item["name"] for item in by_q["items"]} == {"alpha-bot", "beta-bot"}
    assert client.get("/v1/agents?q=100%25", headers=headers).get_json()["total"] == 1
    assert client.get("/v1/agents?q=_", headers=headers).get_json()["total"] == 1
    stopped = client.get("/v1/agents?status=stopped", headers=headers).get_json()
    assert [item["id"] for item in stopped["items"]] == [ids[1]]
    assert client.get("/v1/agents?status=idle", headers=headers).get_json()["total"] == 4
    assert_error(client.get("/v1/agents?status=bogus", headers=headers), 400, "validation_error")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/agents"),
        ("post", "/v1/agents"),
        ("get", "/v1/agents/x"),
        ("patch", "/v1/agents/x"),
        ("delete", "/v1/agents/x"),
    ],
)
def test_agent_routes_need_login(client: FlaskClient, method: str, path: str) -> None:
    assert_error(getattr(client, method)(path, json={}), 401, "unauthorized")
