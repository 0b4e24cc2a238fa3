"""`interact`'s choice of replica: sticky sessions, and passing over a replica that takes no connection.

Replicas are real HTTP servers on loopback (the `replicas` fixture of test_api_keys), so a replica that
is gone refuses the connection for real, and one that hangs up after reading the request really does.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import Instance, Invocation
from deploy_service.reconciler import Reconciler
from tests.api.test_api_keys import RECEIVED, deployed, replicas
from tests.fakes import FakeRunner
from tests.helpers import Api, assert_error, converge

__all__ = ["replicas"]  # a fixture, used by name

SESSIONS = [f"conversation-{n}" for n in range(24)]


def call(api: Api, agent_id: str, body: dict[str, Any], session: str | None = None) -> Any:
    headers = {**api.headers, **({"X-Session-Id": session} if session is not None else {})}
    return api.client.post(f"/v1/agents/{agent_id}/interact", headers=headers, json=body)


def pinned(api: Api, agent_id: str) -> dict[str, int]:
    """Which replica answers each session, asserting that every call of a session lands on the same one."""
    seen: dict[str, int] = {}
    for _ in range(2):
        for session in SESSIONS:
            answer = call(api, agent_id, {"s": session}, session)
            assert answer.status_code == 200, answer.get_json()
            assert seen.setdefault(session, answer.get_json()["replica"]) == answer.get_json()["replica"]
    return seen


def set_ready(app: Flask, deployment_id: str, index: int, ready: bool) -> None:
    with app.app_context():
        instance = db.session.scalars(
            select(Instance).where(Instance.deployment_id == deployment_id, Instance.index == index)
        ).one()
        instance.healthy = ready
        db.session.commit()


def stop_server(servers: list[Any], index: int) -> None:
    [server] = [server for server in servers if server.replica_index == index]
    server.shutdown()
    server.server_close()


def test_calls_of_a_session_stay_on_one_replica_and_only_a_leaving_replicas_sessions_move(
    app: Flask, api: Api, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=3)
    agent_id, deployment_id = setup["agent"]["id"], setup["deployment"]["id"]
    before = pinned(api, agent_id)
    assert set(before.values()) == {0, 1, 2}, "24 sessions spread over the three replicas"

    set_ready(app, deployment_id, 1, False)  # replica 1 fails its health check
    while_away = pinned(api, agent_id)
    assert {s for s in SESSIONS if while_away[s] != before[s]} == {s for s in SESSIONS if before[s] == 1}
    assert 1 not in while_away.values()
    set_ready(app, deployment_id, 1, True)
    assert pinned(api, agent_id) == before, "its sessions come back with it"

    scaled = api.post(f"/v1/deployments/{deployment_id}/scale", {"replicas": 2})
    assert scaled.status_code == 202, scaled.get_json()
    converge(reconciler, lambda: len(fake_runner.of(deployment_id)) == 2)
    after = pinned(api, agent_id)
    assert {s for s in SESSIONS if after[s] != before[s]} == {s for s in SESSIONS if before[s] == 2}

    # Without a session, round-robin as before.
    assert sorted(call(api, agent_id, {}).get_json()["replica"] for _ in range(2)) == [0, 1]
    with app.app_context():
        assert len(db.session.scalars(select(Invocation)).all()) == 24 * 2 * 4 + 2


def test_a_replica_that_takes_no_connection_is_passed_over_once(
    app: Flask, api: Api, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=3)
    agent_id = setup["agent"]["id"]
    before = pinned(api, agent_id)
    stop_server(replicas, 1)  # still ready in the database: the health check has not noticed yet
    RECEIVED.clear()
    for n in range(9):
        answer = call(api, agent_id, {"n": n})
        assert answer.status_code == 200 and answer.get_json()["replica"] in (0, 2), answer.get_json()
    assert [body["n"] for _, body in RECEIVED] == list(range(9)), "each call reached exactly one replica"
    moved = pinned(api, agent_id)
    for session in SESSIONS:
        if before[session] == 1:
            assert moved[session] in (0, 2)
        else:
            assert moved[session] == before[session]

    stop_server(replicas, 0)
    stop_server(replicas, 2)
    failed = call(api, agent_id, {"n": "none"})
    assert_error(failed, 502, "bad_gateway")
    assert sorted(tried["replica"] for tried in failed.get_json()["details"]["tried"]) == [0, 1, 2]


def test_a_request_that_reached_a_replica_is_never_sent_again(
    app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=2)
    agent_id = setup["agent"]["id"]
    RECEIVED.clear()
    for session in (None, "sticky"):
        assert_error(call(api, agent_id, {"mode": "drop"}, session), 502, "bad_gateway")
    assert len(RECEIVED) == 2, RECEIVED
    with app.app_context():
        assert sorted(db.session.scalars(select(Invocation.status_code)).all()) == [502, 502]


def test_a_session_id_must_be_printable_and_short(app: Flask, api: Api, reconciler: Reconciler) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    for bad in ("", "x" * 201, "tab\there", "é"):
        headers = {**api.headers, "X-Session-Id": bad}
        sent = api.client.post(f"/v1/agents/{agent_id}/interact", headers=headers, json={})
        assert_error(sent, 400, "validation_error")
    with app.app_context():
        assert db.session.scalars(select(Invocation)).all() == []
