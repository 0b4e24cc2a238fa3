"""`POST /v1/deployments` straight from a repository or an image: an agent made for the caller and deployed, in
one transaction, validated exactly as `POST /v1/agents` validates an agent.

On the in-memory runner; the same deploy from a local git repository to `ready`, on the real engine, is in
tests/integration/test_deploy_from_source_engine.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import Agent, Deployment, DeploymentEvent, Release
from deploy_service.reconciler import Reconciler
from deploy_service.schemas.agent import AgentInputSchema
from deploy_service.schemas.deployment import DeploymentCreateSchema
from deploy_service.settings import Settings
from tests.api.test_agents import UNSAFE_BRANCHES, UNSAFE_GIT_URLS
from tests.factories import make_secret, make_user
from tests.fakes import FakeRunner
from tests.helpers import Api, assert_error, converge, deploy, new_agent

REPO = "https://github.com/acme/support-bot.git"


def _rows(app: Flask) -> tuple[int, int, int, int]:
    """How many agents, deployments, releases and events are stored."""
    with app.app_context():
        return tuple(  # type: ignore[return-value]
            db.session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Agent, Deployment, Release, DeploymentEvent)
        )


def _from_source(api: Api, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/deployments", {"source": {"git_url": REPO}, **body})
    assert response.status_code == 202, response.get_json()
    deployment: dict[str, Any] = response.get_json()
    return deployment


def test_a_deploy_from_a_repository_makes_the_callers_agent_and_shows_the_commit_once_built(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    me = api.get("/v1/auth/me").get_json()
    body = _from_source(
        api,
        replicas=2,
        env={"MODE": "fast"},
        port=9000,
        command=["/bin/agent", "--serve"],
    )

    assert body["status"] == "deploying" and body["replicas"]["desired"] == 2
    assert body["source"] == {"git_url": REPO, "branch": "main", "commit": None}
    agent = api.get(f"/v1/agents/{body['agent_id']}").get_json()
    assert agent["owner_id"] == me["id"] == body["owner_id"]
    assert agent["name"] == "support-bot-main"
    assert agent["status"] == "deployed"
    assert agent["image"] is None
    assert agent["source"] == {"git_url": REPO, "branch": "main", "dockerfile": "Dockerfile", "context": "."}
    assert (agent["port"], agent["command"], agent["env"]) == (9000, ["/bin/agent", "--serve"], {"MODE": "fast"})
    assert body["config"]["env"] == {"MODE": "fast"} and body["config"]["port"] == 9000
    [created] = api.events(body["id"], event_type="created")
    assert created["data"]["agent_created"] is True

    converge(reconciler, lambda: api.deployment(body["id"])["status"] == "ready")
    shown = api.deployment(body["id"])
    assert shown["source"] == {"git_url": REPO, "branch": "main", "commit": fake_runner.build_commit}
    [build] = fake_runner.builds
    assert (build.git_url, build.branch) == (REPO, "main")
    listed = api.get("/v1/deployments").get_json()["items"]
    assert [item["source"] for item in listed] == [shown["source"]]


def test_an_image_agents_deployment_shows_no_source(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    body = api.post("/v1/deployments", {"image": "ghcr.io/acme/support-bot:1.4"}).get_json()
    assert body["source"] is None
    assert api.get(f"/v1/agents/{body['agent_id']}").get_json()["name"] == "support-bot-1.4"
    assert api.deployment(body["id"])["source"] is None
    registered = deploy(api, new_agent(app, api)["id"])
    assert registered["source"] is None


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("deploy-test/http-agent", "http-agent-latest"),
        ("localhost:5000/team/agent:v2", "agent-v2"),
        ("ghcr.io/acme/bot@sha256:" + "a" * 64, "bot-latest"),
        ("ghcr.io/acme/bot:1.0@sha256:" + "a" * 64, "bot-1.0"),
    ],
)
def test_default_names_of_images(
    app: Flask, api: Api, fake_runner: FakeRunner, configure: Callable[..., Settings], image: str, name: str
) -> None:
    configure(ALLOWED_REGISTRIES=["localhost:5000"])
    body = api.post("/v1/deployments", {"image": image}).get_json()
    assert api.get(f"/v1/agents/{body['agent_id']}").get_json()["name"] == name


def test_default_names_are_made_unique_and_a_given_name_is_the_agents(
    app: Flask, api: Api, fake_runner: FakeRunner
) -> None:
    first = _from_source(api)
    second = _from_source(api)
    feature = api.post(
        "/v1/deployments", {"source": {"git_url": "https://github.com/acme/bot", "branch": "feature/new-ui"}}
    ).get_json()
    named = _from_source(api, name="my bot")
    names = [api.get(f"/v1/agents/{d['agent_id']}").get_json()["name"] for d in (first, second, feature, named)]
    assert names == ["support-bot-main", "support-bot-main-2", "bot-feature-new-ui", "my bot"]

    before = _rows(app)
    error = assert_error(api.post("/v1/deployments", {"image": "a/b:1", "name": "my bot"}), 409, "conflict")
    assert error["details"] == {"name": "my bot"}
    assert _rows(app) == before


def test_another_users_agent_of_that_name_does_not_count(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    other = make_user(app)
    from tests.factories import make_agent

    make_agent(app, other, name="support-bot-main")
    assert api.get(f"/v1/agents/{_from_source(api)['agent_id']}").get_json()["name"] == "support-bot-main"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"agent_id", "source", "image"}),
        ({"replicas": 2}, {"agent_id", "source", "image"}),
        ({"agent_id": "x", "image": "a/b:1"}, {"agent_id", "image"}),
        ({"agent_id": "x", "source": {"git_url": REPO}}, {"agent_id", "source"}),
        ({"image": "a/b:1", "source": {"git_url": REPO}}, {"image", "source"}),
        ({"agent_id": "x", "name": "n"}, {"name"}),
        ({"agent_id": "x", "port": 9000, "health_check": {}}, {"port", "health_check"}),
        ({"agent_id": "x", "image": None}, {"image"}),
        ({"source": {"git_url": REPO}, "replicas": 0}, {"replicas"}),
        ({"source": {"git_url": REPO}, "replicas": 51}, {"replicas"}),
        ({"source": {"git_url": REPO}, "privileged": True}, {"privileged"}),
        ({"source": {"git_url": REPO}, "name": "-starts-with-a-dash"}, {"name"}),
        ({"source": {"git_url": REPO}, "port": 0}, {"port"}),
        ({"source": {"git_url": REPO}, "env": {"PORT": "1"}}, {"env"}),
        ({"source": {"git_url": REPO}, "env": {"A": "1"}, "secrets": {"A": "s"}}, {"secrets"}),
        ({"source": {"git_url": REPO}, "resources": {"memory_mb": 10**9}}, {"resources"}),
        ({"source": {"git_url": REPO, "dockerfile": "../x"}}, {"source"}),
        ({"image": "deploy-service/agent-x:abc-r1"}, {"image"}),
        ({"image": "10.1.2.3:5000/x:1"}, {"image"}),
        ({"source": {"git_url": "https://10.1.2.3/x.git"}}, {"source"}),
    ],
)
def test_exactly_one_of_agent_id_source_and_image_and_the_agents_own_validation(
    app: Flask, api: Api, fake_runner: FakeRunner, body: dict[str, Any], fields: set[str]
) -> None:
    error = assert_error(api.post("/v1/deployments", body), 400, "validation_error")
    assert set(error["details"]) == fields, error
    assert _rows(app) == (0, 0, 0, 0)


@pytest.mark.parametrize("git_url", UNSAFE_GIT_URLS)
def test_the_git_injection_set_is_refused_before_anything_runs(
    app: Flask, api: Api, fake_runner: FakeRunner, git_url: str
) -> None:
    error = assert_error(api.post("/v1/deployments", {"source": {"git_url": git_url}}), 400, "validation_error")
    assert "git_url" in error["details"]["source"]
    assert _rows(app) == (0, 0, 0, 0)
    assert fake_runner.builds == []


@pytest.mark.parametrize("branch", UNSAFE_BRANCHES)
def test_unsafe_branches_are_refused_before_anything_runs(
    app: Flask, api: Api, fake_runner: FakeRunner, branch: str
) -> None:
    body = {"source": {"git_url": REPO, "branch": branch}}
    error = assert_error(api.post("/v1/deployments", body), 400, "validation_error")
    assert "branch" in error["details"]["source"]
    assert _rows(app) == (0, 0, 0, 0)


def test_local_repositories_need_the_test_flag(
    app: Flask, api: Api, fake_runner: FakeRunner, configure: Callable[..., Settings]
) -> None:
    body = {"source": {"git_url": "file:///srv/repos/agent", "branch": "dev"}}
    assert_error(api.post("/v1/deployments", body), 400, "validation_error")
    configure(ALLOW_LOCAL_GIT_SOURCES=True)
    created = api.post("/v1/deployments", body)
    assert created.status_code == 202, created.get_json()
    assert api.get(f"/v1/agents/{created.get_json()['agent_id']}").get_json()["name"] == "agent-dev"


def test_refused_deploys_leave_no_agent_behind(
    app: Flask, api: Api, fake_runner: FakeRunner, configure: Callable[..., Settings]
) -> None:
    configure(QUOTA_REPLICAS=2, QUOTA_MEMORY_MB=1024, QUOTA_AGENTS=1)
    source = {"source": {"git_url": REPO}}

    refused = assert_error(api.post("/v1/deployments", {**source, "replicas": 3}), 403, "quota_exceeded")
    assert refused["details"] == {"quota": "replicas", "limit": 2, "used": 0}
    body = {**source, "resources": {"memory_mb": 2048}}
    assert_error(api.post("/v1/deployments", body), 403, "quota_exceeded")
    missing = assert_error(api.post("/v1/deployments", {**source, "secrets": {"TOKEN": "nope"}}), 404, "not_found")
    assert "TOKEN" in missing["details"]["secrets"]
    auth = {**source, "registry_auth": {"username": "u", "password_secret": "nope"}}
    assert_error(api.post("/v1/deployments", auth), 400, "validation_error")
    fake_runner.down = True
    assert_error(api.post("/v1/deployments", source), 503, "engine_unavailable")
    fake_runner.down = False
    assert _rows(app) == (0, 0, 0, 0)

    _from_source(api)  # the one agent the quota allows
    before = _rows(app)
    again = assert_error(api.post("/v1/deployments", source), 403, "quota_exceeded")
    assert again["details"]["quota"] == "agents"
    assert _rows(app) == before


def test_the_new_agent_takes_the_callers_secrets_and_the_agents_defaults(
    app: Flask, api: Api, fake_runner: FakeRunner
) -> None:
    me = api.get("/v1/auth/me").get_json()
    make_secret(app, type("Owner", (), {"id": me["id"]}), name="openai-key")  # type: ignore[arg-type]
    body = _from_source(api, secrets={"OPENAI_API_KEY": "openai-key"}, health_check={"interval_seconds": 2})
    assert body["config"]["secrets"] == {"OPENAI_API_KEY": "openai-key"}
    assert body["config"]["health_check"] == {
        "path": "/health",
        "interval_seconds": 2,
        "timeout_seconds": 5,
        "retries": 3,
    }


def test_a_deploy_of_a_registered_agent_is_as_before(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    agent = new_agent(app, api)
    body = deploy(api, agent["id"], replicas=2, env={"MODE": "x"}, resources={"memory_mb": 64})
    assert body["agent_id"] == agent["id"]
    assert body["config"]["env"] == {"MODE": "x"} and body["config"]["resources"]["memory_mb"] == 64
    assert _rows(app)[0] == 1


def test_every_agent_field_comes_along() -> None:
    """The body is derived from the agent's schema: a field added there is taken here, validators and all."""
    agent_fields, deploy_fields = AgentInputSchema().fields, DeploymentCreateSchema().fields
    assert set(agent_fields) | {"agent_id", "replicas"} == set(deploy_fields)
    for name, field in agent_fields.items():
        assert deploy_fields[name].validate == field.validate, name
    assert not deploy_fields["name"].required and agent_fields["name"].required


def test_the_spec_says_exactly_one_of_the_three(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    """The rules the body schema's validator applies are in the spec the fuzzer and clients read."""
    spec = api.get("/openapi.json").get_json()
    body = jsonschema_rs.Draft202012Validator({**spec, "$ref": "#/components/schemas/DeploymentCreate"})
    for accepted in (
        {"agent_id": "a"},
        {"agent_id": "a", "replicas": 2, "env": {}},
        {"image": "a/b"},
        {"source": {"git_url": REPO}},
    ):
        assert body.is_valid(accepted), accepted
    for refused in (
        {},
        {"agent_id": "a", "image": "a/b"},
        {"image": "a/b", "source": {"git_url": REPO}},
        {"agent_id": "a", "name": "x"},
        {"image": None, "source": None},
    ):
        assert not body.is_valid(refused), refused
    operation = spec["paths"]["/v1/deployments"]["post"]
    assert set(operation["requestBody"]["content"]["application/json"]["examples"]) == {"agent", "source", "image"}
