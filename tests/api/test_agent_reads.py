"""The agents page on the prepared-read path (services/agent_reads.py) answers exactly what AgentSchema would dump.

`GET /v1/agents` builds its items from Core rows without the ORM or marshmallow; these tests hold them to the
documented schema on agents of every shape: built from an image or from git, with and without a health check,
registry credentials, a command, secrets, a job's timeout, stored values of the other JSON type (an integer
where the schema says float) and stored keys the schema does not show; and its filters, scopes and pages.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.extensions import db
from deploy_service.models import Agent
from deploy_service.schemas.agent import AgentSchema
from deploy_service.services.agent_reads import AGENT_FIELDS
from tests.factories import AuthActions, make_admin, make_agent, make_user
from tests.helpers import assert_error

T0 = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)

SHAPES: dict[str, dict[str, Any]] = {
    "image agent, every default": {},
    "git agent, its source's defaults filled in and a stored key the schema does not show": {
        "image": None,
        "source": {
            "git_url": "https://git.example.com/acme/agent.git",
            "branch": "main",
            "dockerfile": "Dockerfile",
            "context": ".",
            "internal": "not shown",
        },
    },
    "health check stored with integers where the schema says float": {
        "health_check": {"path": "/healthz", "interval_seconds": 10, "timeout_seconds": 5, "retries": 3},
        "resources": {"cpu": 1, "memory_mb": 256},
    },
    "a partial health check (an old row)": {"health_check": {"path": "/health"}},
    "registry credentials, the secret by name": {
        "image": "ghcr.io/acme/agent:1.2",
        "registry_auth": {"username": "robot$ci", "password_secret": "ghcr-token", "registry": None},
    },
    "a job with a timeout, a command, env and secrets": {
        "kind": "job",
        "restart_policy": "on-failure",
        "timeout_seconds": 30,
        "command": ["python", "-m", "job", "--name=ünïcode ✓"],
        "env": {"MODE": "fast", "GREETING": "héllo ✓"},
        "secrets": {"TOKEN": "api-token"},
        "run_as_user": "1000:1000",
        "read_only_rootfs": False,
        "description": "Runs once.",
        "status": "deployed",
    },
    "timestamps on a whole second": {"created_at": T0.replace(microsecond=0), "updated_at": T0.replace(microsecond=0)},
}


def _make(app: Flask, owner_id: str, name: str, shape: dict[str, Any], at: datetime) -> str:
    fields: dict[str, Any] = {
        "image": "deploy-test/http-agent:latest",
        "resources": {"cpu": 0.5, "memory_mb": 512},
        "created_at": at,
        "updated_at": at + timedelta(seconds=1),
        **shape,
    }
    with app.app_context():
        agent = Agent(owner_id=owner_id, name=name, **fields)
        db.session.add(agent)
        db.session.commit()
        return str(agent.id)


def _schema_dump(app: Flask, agent_id: str) -> Any:
    with app.app_context():
        return json.loads(json.dumps(AgentSchema().dump(db.session.get(Agent, agent_id))))


def test_the_declared_fields_are_the_schemas_fields_in_its_order() -> None:
    assert [key for key, _ in AGENT_FIELDS] == list(AgentSchema().fields)


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_an_item_is_what_the_schema_dumps(app: Flask, client: FlaskClient, auth: AuthActions, shape: str) -> None:
    owner = make_user(app)
    agent_id = _make(app, owner.id, "agent", SHAPES[shape], T0)

    response = client.get("/v1/agents", headers=auth.headers(owner))

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json.loads(response.data)
    expected = _schema_dump(app, agent_id)
    assert body == {"items": [expected], "total": 1, "skip": 0, "limit": 50}
    [item] = body["items"]
    # The same keys in the same order, nested objects too, and the same JSON types (`10.0`, not `10`, where the
    # schema says float): the same text once parsed and written again.
    assert json.dumps(item) == json.dumps(expected)
    assert item["created_at"].endswith("+00:00")


def test_an_agent_made_by_the_service_is_listed_as_its_get_shows_it(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    owner = make_user(app)
    agent = make_agent(app, owner, health_check={}, command=["serve"], env={"A": "1"})

    listed = client.get("/v1/agents", headers=auth.headers(owner)).get_json()["items"]
    got = client.get(f"/v1/agents/{agent['id']}", headers=auth.headers(owner)).get_json()

    assert listed == [got]


def test_newest_first_paged_filtered_and_scoped(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    owner, other, admin = make_user(app), make_user(app), make_admin(app)
    names = ["alpha", "beta_1", "beta%2", "Gamma", "delta"]
    mine = [_make(app, owner.id, name, {}, T0 + timedelta(minutes=n)) for n, name in enumerate(names)]
    deployed = _make(app, owner.id, "epsilon", {"status": "deployed"}, T0 - timedelta(minutes=1))
    tied = [_make(app, owner.id, f"tie-{n}", {}, T0 - timedelta(hours=1)) for n in range(2)]  # ordered by id
    theirs = _make(app, other.id, "alpha", {}, T0)

    def ids(query: str, who: Any = owner) -> list[str]:
        response = client.get(f"/v1/agents?{query}", headers=auth.headers(who))
        assert response.status_code == 200, response.get_json()
        return [item["id"] for item in response.get_json()["items"]]

    newest_first = [*reversed(mine), deployed, *sorted(tied, reverse=True)]
    assert ids("limit=100") == newest_first
    page = client.get("/v1/agents?limit=2&skip=1", headers=auth.headers(owner)).get_json()
    assert ([item["id"] for item in page["items"]], page["total"], page["skip"], page["limit"]) == (
        newest_first[1:3],
        len(newest_first),
        1,
        2,
    )
    past_the_end = client.get("/v1/agents?skip=50", headers=auth.headers(owner)).get_json()
    assert past_the_end == {"items": [], "total": len(newest_first), "skip": 50, "limit": 50}
    assert ids("status=deployed") == [deployed]
    assert ids("q=GAMMA") == [mine[3]]
    assert ids("q=beta_") == [mine[1]], "`_` is a character, not a wildcard"
    assert ids("q=a%25") == [mine[2]], "`%` is a character, not a wildcard"
    assert ids("q=alpha", admin) == sorted([theirs, mine[0]], reverse=True), "the same instant: by id"
    assert ids(f"owner_id={other.id}", admin) == [theirs]
    assert ids(f"owner_id={owner.id}&status=deployed", admin) == [deployed]
    assert ids(f"owner_id={owner.id}&limit=1") == [mine[-1]], "one's own id is no admin's filter"
    assert ids("limit=100", other) == [theirs]


def test_another_users_agents_are_an_admins_filter(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    owner, other = make_user(app), make_user(app)

    response = client.get(f"/v1/agents?owner_id={other.id}", headers=auth.headers(owner))

    assert_error(response, 403, "forbidden")
