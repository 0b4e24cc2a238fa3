"""Agents report progress: `POST /v1/deployments/<id>/events` with the agent's key (scope `results`) or by the
owner makes an `agent_reported` event, listed by the deployment's events route.

The same call from inside a container on the real engine is in tests/integration/test_deploy_from_source_engine.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentEvent
from deploy_service.schemas.deployment import MAX_REPORT_DATA_BYTES, MAX_REPORT_DATA_DEPTH
from deploy_service.settings import Settings
from tests.api.test_api_keys import new_key, with_key
from tests.factories import AuthActions
from tests.helpers import Api, assert_error, deploy, new_agent

pytestmark = pytest.mark.usefixtures("fake_runner")


def _url(deployment_id: str) -> str:
    return f"/v1/deployments/{deployment_id}/events"


def _reported(app: Flask) -> int:
    with app.app_context():
        stmt = select(func.count()).select_from(DeploymentEvent).where(DeploymentEvent.event_type == "agent_reported")
        return db.session.scalar(stmt) or 0


def _deployed(app: Flask, api: Api) -> tuple[str, str]:
    agent = new_agent(app, api)
    return agent["id"], deploy(api, agent["id"])["id"]


def test_the_agents_key_reports_progress_as_an_event(app: Flask, api: Api, client: FlaskClient) -> None:
    agent_id, deployment_id = _deployed(app, api)
    key = with_key(client, new_key(api, agent_id, scopes=["results"])["key"])
    body = {"message": "Indexed 1200 of 5000 documents.", "data": {"done": 1200, "total": 5000, "stage": ["a"]}}

    response = client.post(_url(deployment_id), headers=key, json=body)

    assert response.status_code == 201, response.get_json()
    event = response.get_json()
    assert set(event) == {"id", "event_type", "status", "message", "data", "created_at"}
    assert (event["event_type"], event["status"]) == ("agent_reported", "deploying")
    assert (event["message"], event["data"]) == (body["message"], body["data"])
    listed = api.get(f"{_url(deployment_id)}?event_type=agent_reported").get_json()
    assert listed["items"] == [event] and listed["total"] == 1
    everything = api.get(_url(deployment_id)).get_json()
    assert everything["items"][0] == event
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        assert deployment is not None
        counted = db.session.scalar(
            select(func.count()).select_from(DeploymentEvent).where(DeploymentEvent.deployment_id == deployment_id)
        )
        assert deployment.events_total == counted == everything["total"]


def test_the_owner_reports_too_without_data(app: Flask, api: Api) -> None:
    _, deployment_id = _deployed(app, api)
    response = api.post(_url(deployment_id), {"message": "Started by hand\nsecond line"})
    assert response.status_code == 201
    assert response.get_json()["data"] == {}
    assert response.get_json()["message"] == "Started by hand second line"


def test_who_may_report(app: Flask, api: Api, client: FlaskClient, auth: AuthActions) -> None:
    agent_id, deployment_id = _deployed(app, api)
    other_agent, other_deployment = _deployed(app, api)
    body = {"message": "hello"}
    own_invoke_key = with_key(client, new_key(api, agent_id, scopes=["invoke", "telemetry"])["key"])
    other_agents_key = with_key(client, new_key(api, other_agent, scopes=["results"])["key"])
    _, stranger = auth.user()

    assert_error(client.post(_url(deployment_id), headers=own_invoke_key, json=body), 403, "forbidden")
    assert_error(client.post(_url(deployment_id), headers=other_agents_key, json=body), 404, "not_found")
    assert_error(client.post(_url(deployment_id), headers=stranger, json=body), 404, "not_found")
    assert_error(client.post(_url("no-such-deployment"), headers=other_agents_key, json=body), 404, "not_found")
    assert_error(client.post(_url(deployment_id), json=body), 401, "unauthorized")
    assert_error(
        client.post(_url(deployment_id), headers={"X-API-Key": "dsk_" + "x" * 40}, json=body), 401, "unauthorized"
    )
    # The key reports on its own agent's deployment, and reading the events is still the owner's.
    assert client.post(_url(other_deployment), headers=other_agents_key, json=body).status_code == 201
    assert_error(client.get(_url(other_deployment), headers=other_agents_key), 403, "forbidden")
    assert _reported(app) == 1


def test_a_killed_deployments_history_still_takes_the_agents_last_word(
    app: Flask, api: Api, client: FlaskClient
) -> None:
    agent_id, deployment_id = _deployed(app, api)
    key = with_key(client, new_key(api, agent_id, scopes=["results"])["key"])
    api.delete(f"/v1/deployments/{deployment_id}")
    response = client.post(_url(deployment_id), headers=key, json={"message": "Shutting down."})
    assert response.status_code == 201 and response.get_json()["status"] == "killed"


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "x" * 501}, "message"),
        ({"message": 5}, "message"),
        ({"message": "ok", "data": "a string"}, "data"),
        ({"message": "ok", "data": [1, 2]}, "data"),
        ({"message": "ok", "data": {"blob": "x" * MAX_REPORT_DATA_BYTES}}, "data"),
        ({"message": "ok", "data": {"blob": "é" * (MAX_REPORT_DATA_BYTES // 2)}}, "data"),
        ({"message": "ok", "data": _nested(MAX_REPORT_DATA_DEPTH + 1)}, "data"),
        ({"message": "ok", "data": {"list": [[[[[[[[[1]]]]]]]]]}}, "data"),
        ({"message": "ok", "data": {"nul": "a\x00b"}}, "data"),
        ({"message": "ok", "event_type": "status_changed"}, "event_type"),
        ({"message": "ok", "data": None}, "data"),
        ({"message": "ok", "status": "ready"}, "status"),
        ({"message": "ok", "created_at": "2020-01-01T00:00:00Z"}, "created_at"),
    ],
)
def test_limits_and_refusals_write_nothing(app: Flask, api: Api, body: dict[str, Any], field: str) -> None:
    _, deployment_id = _deployed(app, api)
    error = assert_error(api.post(_url(deployment_id), body), 400, "validation_error")
    assert field in error["details"], error
    assert _reported(app) == 0


def test_the_limits_accept_what_they_name(app: Flask, api: Api, configure: Callable[..., Settings]) -> None:
    _, deployment_id = _deployed(app, api)
    for body in (
        {"message": "x" * 500, "data": _nested(MAX_REPORT_DATA_DEPTH)},
        {"message": "nulls are JSON", "data": {"": None, "list": [None, 1.5, True]}},
        {"message": "ok", "data": {"blob": "x" * (MAX_REPORT_DATA_BYTES - len('{"blob":""}'))}},
    ):
        assert api.post(_url(deployment_id), body).status_code == 201
    configure(STORED_TEXT_MAX_CHARS=100)
    assert_error(api.post(_url(deployment_id), {"message": "x" * 101}), 400, "validation_error")
    assert api.post(_url(deployment_id), {"message": "x" * 100}).status_code == 201
    assert _reported(app) == 4


def test_the_spec_states_the_message_rules(app: Flask, api: Api) -> None:
    """What the fuzzer generates from the spec is what the route takes: a visible character, no NUL, the cap."""
    spec = api.get("/openapi.json").get_json()
    body = jsonschema_rs.Draft202012Validator({**spec, "$ref": "#/components/schemas/EventReport"})
    for accepted in ({"message": "x"}, {"message": " é ", "data": {"a": [1]}}, {"message": "x" * 500}):
        assert body.is_valid(accepted), accepted
    for refused in ({"message": ""}, {"message": " \n\t"}, {"message": "a\x00"}, {"message": "x" * 501}, {}):
        assert not body.is_valid(refused), refused
    operation = spec["paths"]["/v1/deployments/{deployment_id}/events"]["post"]
    assert operation["operationId"] == "reportDeploymentEvent"
    assert {"bearerAuth", "apiKey"} <= {name for item in operation["security"] for name in item}
