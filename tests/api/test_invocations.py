"""`GET /v1/agents/<id>/invocations`: every call through `interact`, newest first, never the bodies; retention."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import func, select, update

from deploy_service.extensions import db
from deploy_service.models import Invocation
from deploy_service.models.types import utcnow
from deploy_service.reconciler import Reconciler
from deploy_service.reconciler.jobs import PruneInvocationsJob
from tests.api.test_api_keys import deployed, new_key, replicas
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, assert_error

__all__ = ["replicas"]  # a fixture, used by name

SECRET_QUESTION = "what-is-the-launch-code"
FIELDS = {
    "id",
    "deployment_id",
    "replica",
    "session_id",
    "status_code",
    "error",
    "streamed",
    "latency_ms",
    "first_byte_ms",
    "request_bytes",
    "response_bytes",
    "created_at",
}


def invocations(api: Api, agent_id: str, query: str = "") -> dict[str, Any]:
    response = api.get(f"/v1/agents/{agent_id}/invocations{query}")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_every_call_is_listed_newest_first_with_its_figures_and_never_its_bodies(
    app: Flask, api: Api, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=2)
    agent_id, deployment_id = setup["agent"]["id"], setup["deployment"]["id"]
    url = f"/v1/agents/{agent_id}/interact"
    first = api.post(url, {"q": SECRET_QUESTION})
    assert first.status_code == 200
    sticky = api.client.post(url, headers={**api.headers, "X-Session-Id": "chat-1"}, json={"q": 2})
    assert sticky.status_code == 200
    assert api.post(url, {"mode": "error"}).status_code == 500
    assert_error(api.post(url, {"mode": "text"}), 502, "bad_gateway")

    listed = invocations(api, agent_id)
    assert listed["total"] == 4 and listed["skip"] == 0
    assert SECRET_QUESTION not in str(listed) and "agent broke" not in str(listed)
    items = listed["items"]
    assert all(set(item) == FIELDS for item in items)
    assert [item["status_code"] for item in items] == [502, 500, 200, 200]
    newest, agent_error, with_session, oldest = items
    assert newest["error"].startswith("bad_gateway: ") and newest["response_bytes"] == len(b"plain words")
    assert agent_error["error"] is None and agent_error["status_code"] == 500
    assert with_session["session_id"] == "chat-1" and oldest["session_id"] is None
    assert with_session["replica"] == sticky.get_json()["replica"]
    assert oldest["request_bytes"] == len(b'{"q": "' + SECRET_QUESTION.encode() + b'"}')
    assert oldest["response_bytes"] == len(json.dumps(first.get_json()).encode()), "the agent's own bytes"
    for item in items:
        assert item["deployment_id"] == deployment_id and item["streamed"] is False
        assert 0 < item["first_byte_ms"] <= item["latency_ms"]

    assert [item["status_code"] for item in invocations(api, agent_id, "?status=error")["items"]] == [502, 500]
    assert [item["status_code"] for item in invocations(api, agent_id, "?status=ok")["items"]] == [200, 200]
    paged = invocations(api, agent_id, "?skip=1&limit=2")
    assert [item["id"] for item in paged["items"]] == [item["id"] for item in items[1:3]] and paged["total"] == 4
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert invocations(api, agent_id, f"?since={later.replace('+', '%2B')}")["total"] == 0
    assert_error(api.get(f"/v1/agents/{agent_id}/invocations?status=maybe"), 400, "validation_error")
    assert_error(api.get(f"/v1/agents/{agent_id}/invocations?since=yesterday"), 400, "validation_error")


def test_another_users_invocations_are_a_404_and_a_key_cannot_list_them(
    app: Flask, api: Api, auth: AuthActions, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    assert api.post(f"/v1/agents/{agent_id}/interact", {}).status_code == 200
    _, other = auth.user()
    assert_error(api.client.get(f"/v1/agents/{agent_id}/invocations", headers=other), 404, "not_found")
    assert_error(api.client.get("/v1/agents/nope/invocations", headers=api.headers), 404, "not_found")
    key = {"X-API-Key": new_key(api, agent_id)["key"]}
    assert api.client.get(f"/v1/agents/{agent_id}/invocations", headers=key).status_code in (401, 403)
    _, admin = auth.admin()
    assert api.client.get(f"/v1/agents/{agent_id}/invocations", headers=admin).get_json()["total"] == 1


def test_the_prune_job_deletes_records_past_their_retention(
    app: Flask, api: Api, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    settings = replace(FAST, invocation_retention_days=30.0, invocation_prune_every=5.0)
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    for n in range(3):
        assert api.post(f"/v1/agents/{agent_id}/interact", {"n": n}).status_code == 200
    old = utcnow() - timedelta(days=30, minutes=1)
    with app.app_context():
        oldest = db.session.scalar(select(func.min(Invocation.id)))
        db.session.execute(update(Invocation).where(Invocation.id == oldest).values(created_at=old))
        db.session.commit()

    job = PruneInvocationsJob(app, settings)
    assert job.run() == 5.0
    listed = invocations(api, agent_id)
    assert listed["total"] == 2 and oldest not in [item["id"] for item in listed["items"]]
    assert 0 < job.run() <= 5.0  # not due again yet
    assert invocations(api, agent_id)["total"] == 2
