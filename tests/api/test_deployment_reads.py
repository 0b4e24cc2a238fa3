"""The fast read path (services/deployment_reads.py) answers exactly what DeploymentSchema would dump.

`GET /v1/deployments/<id>` and `GET /v1/deployments` build their bodies from Core rows without
marshmallow; these tests hold them to the documented schema on deployments in every shape the
reconciler leaves them in: ready with healthy and unhealthy replicas, mid scale-down, stopped, killed,
failed with nothing started, with deploy-time overrides in the config.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentEvent, Instance, Release
from deploy_service.schemas.deployment import DeploymentSchema, EventPageSchema, EventSchema, InstanceSchema
from deploy_service.services import lifecycle
from deploy_service.services.deployment_reads import DEPLOYMENT_FIELDS, EVENT_FIELDS, INSTANCE_FIELDS
from tests.factories import AuthActions, make_agent, make_user

T0 = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


def _instance(index: int, **fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "index": index,
        "container_id": f"c{index}" * 8,
        "status": "running",
        "host": "127.0.0.1",
        "port": 20000 + index,
        "restarts": index,
        "started_at": T0 + timedelta(seconds=index),
        "healthy": True,
    }
    return {**defaults, **fields}


SOURCE = {"git_url": "https://git.example.com/acme/agent.git", "branch": "main"}
SHAPES: dict[str, dict[str, Any]] = {
    "ready, one replica unhealthy, one never started": {
        "status": "ready",
        "replicas_desired": 3,
        "instances": [
            _instance(0),
            _instance(1, healthy=False),
            _instance(2, container_id=None, status="pending", started_at=None, healthy=None),
        ],
        "started_at": T0,
        "ready_at": T0.replace(microsecond=0),
    },
    "scaling down: slots past the desired count are hidden": {
        "status": "running",
        "replicas_desired": 1,
        "instances": [_instance(0), _instance(1), _instance(2, status="exited", exit_code=137)],
    },
    "stopped: no instances, no replicas wanted": {
        "status": "stopped",
        "desired_state": "stopped",
        "instances": [_instance(0, status="exited", exit_code=0)],
    },
    "killed": {"status": "killed", "desired_state": "deleted", "ended_at": T0, "instances": []},
    "failed before anything started": {"status": "failed", "error": "image not found", "image": None},
    "git agent at release 2, its commit built": {
        "status": "ready",
        "revision": 2,
        "releases": [
            {"number": 1, "status": "superseded", "source": {**SOURCE, "commit": "a" * 40}},
            {"number": 2, "status": "active", "source": {**SOURCE, "commit": "b" * 40}},
        ],
    },
    "git agent before its build": {
        "releases": [{"number": 1, "status": "pending", "source": {**SOURCE, "commit": None}}]
    },
    "image agent with its release": {"releases": [{"number": 1, "status": "active", "source": None}]},
}


def _make(app: Flask, owner_id: str, agent_id: str, shape: dict[str, Any]) -> str:
    fields = dict(shape)
    instances = fields.pop("instances", [])
    releases = fields.pop("releases", [])
    with app.app_context():
        deployment = Deployment(
            agent_id=agent_id,
            owner_id=owner_id,
            image=fields.pop("image", "deploy-test/http-agent:latest"),
            config={"port": 8080, "env": {"MODE": "fast"}, "secrets": {"TOKEN": "tok"}, "overrides": {"env": {}}},
            **{"status": "deploying", **fields},
        )
        deployment.instances = [Instance(**instance) for instance in instances]
        db.session.add(deployment)
        db.session.flush()
        for release in releases:
            db.session.add(Release(deployment_id=deployment.id, reason="deploy", image=deployment.image, **release))
        db.session.commit()
        return str(deployment.id)


def _schema_dump(app: Flask, deployment_id: str) -> Any:
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        return json.loads(json.dumps(DeploymentSchema().dump(deployment)))


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_get_by_id_matches_the_schema(app: Flask, client: FlaskClient, auth: AuthActions, shape: str) -> None:
    owner = make_user(app)
    agent = make_agent(app, owner)
    deployment_id = _make(app, owner.id, agent["id"], SHAPES[shape])

    response = client.get(f"/v1/deployments/{deployment_id}", headers=auth.headers(owner))

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json.loads(response.data)
    expected = _schema_dump(app, deployment_id)
    assert body == expected
    # The same keys in the same order, down to each instance: the same bytes but for how values are written.
    assert list(body) == list(expected)
    assert [list(instance) for instance in body["instances"]] == [list(i) for i in expected["instances"]]
    assert "overrides" not in body["config"]
    current = [r for r in SHAPES[shape].get("releases", []) if r["number"] == SHAPES[shape].get("revision", 1)]
    assert body["source"] == (current[0]["source"] if current else None)
    assert body["created_at"].endswith("+00:00")


def test_the_declared_fields_are_the_schemas_fields_in_its_order() -> None:
    """The one list the read path builds its SELECTs and bodies from covers every field the schema documents."""
    assert [key for key, _ in DEPLOYMENT_FIELDS] + ["instances"] == list(DeploymentSchema().fields)
    assert [key for key, _ in INSTANCE_FIELDS] == list(InstanceSchema().fields)
    assert [key for key, _ in EVENT_FIELDS] == list(EventSchema().fields)


def test_list_matches_the_schema_item_by_item(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    owner = make_user(app)
    ids = [_make(app, owner.id, make_agent(app, owner)["id"], shape) for shape in SHAPES.values()]

    response = client.get("/v1/deployments?limit=200", headers=auth.headers(owner))

    assert response.status_code == 200
    body = response.get_json()
    assert (body["total"], body["skip"], body["limit"]) == (len(ids), 0, 200)
    assert {item["id"]: item for item in body["items"]} == {i: _schema_dump(app, i) for i in ids}


def test_list_pages_filters_and_scopes(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    owner, other = make_user(app), make_user(app)
    agent = make_agent(app, owner)
    mine = [_make(app, owner.id, make_agent(app, owner)["id"], SHAPES["killed"]) for _ in range(3)]
    ready = _make(app, owner.id, agent["id"], SHAPES["ready, one replica unhealthy, one never started"])
    _make(app, other.id, make_agent(app, other)["id"], SHAPES["killed"])

    page = client.get("/v1/deployments?limit=2&skip=1", headers=auth.headers(owner)).get_json()
    by_status = client.get("/v1/deployments?status=ready", headers=auth.headers(owner)).get_json()
    by_agent = client.get(f"/v1/deployments?agent_id={agent['id']}", headers=auth.headers(owner)).get_json()
    past_the_end = client.get("/v1/deployments?skip=10", headers=auth.headers(owner)).get_json()

    assert (page["total"], len(page["items"]), page["skip"], page["limit"]) == (4, 2, 1, 2)
    assert {item["id"] for item in page["items"]} <= set(mine + [ready])
    assert [item["id"] for item in by_status["items"]] == [ready]
    assert [item["id"] for item in by_agent["items"]] == [ready]
    assert past_the_end == {"items": [], "total": 4, "skip": 10, "limit": 50}


def _events(app: Flask, deployment_id: str) -> None:
    """Events of every shape: nested data, empty data, none at all, the same instant twice (ordered by id)."""
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        assert deployment is not None
        lifecycle.record_event(deployment, "created", "Created.", {"replicas": 2, "image": "a:1", "source": None})
        lifecycle.record_event(deployment, "scaled", "Scaled.", {"nested": {"list": [1, 2.5, "x", None, True]}})
        lifecycle.record_event(deployment, "health_passed", "Ünïcode ✓ message.", {})
        db.session.add(
            DeploymentEvent(deployment_id=deployment_id, event_type="scaled", status="ready", message="m", data={})
        )
        db.session.commit()
        for event in db.session.query(DeploymentEvent).filter_by(deployment_id=deployment_id).all()[:2]:
            event.created_at = T0  # a tie
        db.session.commit()


def _events_dump(app: Flask, deployment_id: str, **filters: Any) -> Any:
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        assert deployment is not None
        query = db.session.query(DeploymentEvent).filter_by(deployment_id=deployment_id, **filters)
        items = query.order_by(DeploymentEvent.created_at.desc(), DeploymentEvent.id.desc()).all()
        body = {
            "deployment_id": deployment.id,
            "deployment_status": deployment.status,
            "items": items,
            "total": deployment.events_total if not filters else len(items),
            "skip": 0,
            "limit": 50,
        }
        return json.loads(json.dumps(EventPageSchema().dump(body)))


def test_an_events_page_matches_the_schema_filtered_or_not(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    owner, other = make_user(app), make_user(app)
    deployment_id = _make(
        app, owner.id, make_agent(app, owner)["id"], SHAPES["ready, one replica unhealthy, one never started"]
    )
    _events(app, deployment_id)
    url = f"/v1/deployments/{deployment_id}/events"

    body = json.loads(client.get(url, headers=auth.headers(owner)).data)
    assert body == _events_dump(app, deployment_id) and len(body["items"]) == 4 and body["total"] == 3  # the counter
    assert [list(item) for item in body["items"]] == [list(EventSchema().fields)] * 4
    by_type = json.loads(client.get(f"{url}?event_type=scaled", headers=auth.headers(owner)).data)
    assert by_type == _events_dump(app, deployment_id, event_type="scaled") and by_type["total"] == 2
    by_status = client.get(f"{url}?status=killed", headers=auth.headers(owner)).get_json()
    assert (by_status["items"], by_status["total"]) == ([], 0)
    page = client.get(f"{url}?limit=1&skip=1", headers=auth.headers(owner)).get_json()
    assert [item["id"] for item in page["items"]] == [body["items"][1]["id"]] and page["limit"] == 1
    past = client.get(f"{url}?skip=10", headers=auth.headers(owner)).get_json()
    assert (past["items"], past["total"], past["deployment_status"]) == ([], 3, "ready")

    assert client.get(url, headers=auth.headers(other)).status_code == 404
    assert client.get("/v1/deployments/nope/events", headers=auth.headers(owner)).status_code == 404
