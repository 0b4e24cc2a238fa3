"""`GET /v1/events` (the caller's events across deployments, keyset-paged) and `GET /v1/system/info`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from deploy_service.extensions import db
from deploy_service.models import DeploymentEvent
from deploy_service.models.types import utcnow
from tests.factories import AuthActions, make_admin
from tests.helpers import Api, assert_error, deploy, new_agent

pytestmark = pytest.mark.usefixtures("fake_runner")


def _deployed(app: Flask, api: Api) -> dict[str, Any]:
    agent = new_agent(app, api)
    return deploy(api, agent["id"])


def _feed(api: Api, query: str = "") -> dict[str, Any]:
    response = api.get(f"/v1/events?{query}")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _all_ids(app: Flask, deployment_ids: list[str]) -> list[str]:
    with app.app_context():
        stmt = (
            select(DeploymentEvent.id)
            .where(DeploymentEvent.deployment_id.in_(deployment_ids))
            .order_by(DeploymentEvent.created_at.desc(), DeploymentEvent.id.desc())
        )
        return list(db.session.scalars(stmt))


def test_the_feed_is_the_callers_own_and_an_admin_sees_all(
    app: Flask, client: FlaskClient, auth: AuthActions, api: Api
) -> None:
    mine = [_deployed(app, api) for _ in range(2)]
    _, other_headers = auth.user()
    other = Api(client, other_headers)
    theirs = _deployed(app, other)
    api.post(f"/v1/deployments/{mine[0]['id']}/events", {"message": "mine"})
    other.post(f"/v1/deployments/{theirs['id']}/events", {"message": "theirs"})

    feed = _feed(api, "limit=200")
    assert [item["id"] for item in feed["items"]] == _all_ids(app, [d["id"] for d in mine])
    assert feed["total"] == len(feed["items"]) == 7  # created, release_created, rollout_started each; a report
    assert {item["deployment_id"] for item in feed["items"]} == {d["id"] for d in mine}
    by_deployment = {d["id"]: d["agent_id"] for d in mine}
    assert all(item["agent_id"] == by_deployment[item["deployment_id"]] for item in feed["items"])
    assert set(feed["items"][0]) == {
        "id", "deployment_id", "agent_id", "event_type", "status", "message", "data", "created_at"
    }  # fmt: skip
    assert "theirs" not in {item["message"] for item in feed["items"]}
    # Another user's deployment or agent as a filter: nothing, exactly as one that does not exist.
    for query in (f"deployment_id={theirs['id']}", f"agent_id={theirs['agent_id']}", "deployment_id=nope"):
        assert _feed(api, query) == {"items": [], "total": 0, "skip": 0, "limit": 50, "next_before": None}

    admin = make_admin(app)
    everything = _feed(Api(client, auth.headers(admin)), "limit=200")
    assert everything["total"] == 11
    assert [item["id"] for item in everything["items"]] == _all_ids(app, [d["id"] for d in [*mine, theirs]])


def test_filters(app: Flask, api: Api) -> None:
    first, second = _deployed(app, api), _deployed(app, api)
    api.post(f"/v1/deployments/{first['id']}/events", {"message": "progress"})
    api.post(f"/v1/deployments/{second['id']}/events", {"message": "progress"})

    reports = _feed(api, "event_type=agent_reported")
    assert reports["total"] == 2 and {i["event_type"] for i in reports["items"]} == {"agent_reported"}
    one = _feed(api, f"deployment_id={first['id']}")
    assert one["total"] == 4 and {i["deployment_id"] for i in one["items"]} == {first["id"]}
    by_agent = _feed(api, f"agent_id={second['agent_id']}&event_type=agent_reported")
    assert [i["deployment_id"] for i in by_agent["items"]] == [second["id"]] and by_agent["total"] == 1
    later = (utcnow() + timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    assert _feed(api, f"since={later}")["total"] == 0
    earlier = (utcnow() - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    assert _feed(api, f"since={earlier}")["total"] == 8
    for query in ("since=yesterday", "limit=0", "sort=asc", "event_type=" + "x" * 41):
        assert_error(api.get(f"/v1/events?{query}"), 400, "validation_error")


def test_keyset_pages_walk_the_whole_feed_once(app: Flask, api: Api) -> None:
    deployments = [_deployed(app, api) for _ in range(3)]
    for n in range(5):
        api.post(f"/v1/deployments/{deployments[n % 3]['id']}/events", {"message": f"step {n}"})
    expected = _all_ids(app, [d["id"] for d in deployments])
    assert len(expected) == 14

    seen, query, pages = [], "limit=4", 0
    while True:
        page = _feed(api, query)
        pages += 1
        assert page["total"] == 14
        seen += [item["id"] for item in page["items"]]
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["items"][-1]["id"]
        query = f"limit=4&before={page['next_before']}"
    assert seen == expected and pages == 4
    after_two = _feed(api, f"limit=3&skip=2&before={expected[3]}")
    assert [item["id"] for item in after_two["items"]] == expected[6:9]


def test_a_cursor_outside_the_callers_feed_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions, api: Api
) -> None:
    _, other_headers = auth.user()
    theirs = _deployed(app, Api(client, other_headers))
    [their_event, *_] = _all_ids(app, [theirs["id"]])
    for cursor in (their_event, "no-such-event"):
        error = assert_error(api.get(f"/v1/events?before={cursor}"), 404, "not_found")
        assert "before" in error["details"]


def test_the_unfiltered_total_is_the_deployments_counters_not_a_count(app: Flask, api: Api) -> None:
    """`total` comes from `events_total`: the feed's count costs one read of the deployments."""
    deployment = _deployed(app, api)
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(DeploymentEvent)) or 0
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert _feed(api)["total"] == count == 3
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert not [s for s in statements if "count(" in s.lower() and "deployment_events" in s]
    assert any("sum(deployments.events_total)" in s.lower() for s in statements)
    assert deployment["id"]


def test_system_info_for_any_logged_in_caller(app: Flask, client: FlaskClient, api: Api) -> None:
    info = api.get("/v1/system/info").get_json()
    assert info["version"] == api.get("/health").get_json()["version"]
    assert info["runner"] == "fake"  # the in-memory runner these tests install
    with app.app_context():
        assert info["database"] == db.engine.dialect.name
    assert info["network_mode"] in ("host", "bridge", "auto")
    assert info["limits"] == {"max_replicas": 50, "max_cpu": 4.0, "max_memory_mb": 8192}
    assert {"deploy_from_source", "agent_reports", "event_feed", "auto_rollback"} <= set(info["features"])
    assert info["features"] == sorted(info["features"])
    assert_error(client.get("/v1/system/info"), 401, "unauthorized")
