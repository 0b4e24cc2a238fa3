"""Alert rules raised and cleared by the reconciler (in-memory runner), and the alert routes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.extensions import db
from deploy_service.models import Invocation
from deploy_service.reconciler import Reconciler
from deploy_service.services import alerts as alerts_service
from deploy_service.settings import Settings
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, assert_error, converge, new_agent

RULES = dataclasses.replace(FAST, sample_every=0.05, restart_budget=4)


@pytest.fixture()
def reconciler(app: Flask, fake_runner: FakeRunner, configure: Callable[..., Settings]) -> Iterator[Reconciler]:
    configure(ALERT_CRASH_LOOP_RESTARTS=2, ALERT_MIN_SAMPLES=4)
    reconciler = Reconciler(app, runner=fake_runner, settings=RULES)
    yield reconciler
    reconciler.close()


@pytest.fixture()
def api(client: FlaskClient, auth: AuthActions) -> Api:
    _, headers = auth.user()
    return Api(client, headers)


def alerts_of(api: Api, deployment_id: str, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{key}={value}" for key, value in {"deployment_id": deployment_id, **filters}.items())
    items: list[dict[str, Any]] = api.get(f"/v1/alerts?{query}").get_json()["items"]
    return items


def kinds(api: Api, deployment_id: str, status: str = "active") -> set[str]:
    return {alert["kind"] for alert in alerts_of(api, deployment_id, status=status)}


def test_crash_loop_then_failed_then_cleared_by_restart(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment_id = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()["id"]
    converge(reconciler, api.status_is(deployment_id, "ready"))
    counts: list[int] = []

    def crash() -> bool:
        fake_runner.crash_all(deployment_id, exit_code=7)
        found = [a for a in alerts_of(api, deployment_id) if a["kind"] == "crash_loop"]
        if found:
            counts.append(found[0]["count"])
        return api.deployment(deployment_id)["status"] == "failed"

    converge(reconciler, crash)
    assert counts and counts == sorted(counts) and counts[-1] > counts[0]
    assert kinds(api, deployment_id) == {"crash_loop", "deployment_failed"}
    [failed] = [a for a in alerts_of(api, deployment_id) if a["kind"] == "deployment_failed"]
    assert failed["severity"] == "critical" and "kept crashing" in failed["message"]
    ordered = api.get("/v1/deployments/alerts").get_json()["items"]
    assert [a["severity"] for a in ordered] == sorted(
        (a["severity"] for a in ordered), key=["critical", "warning", "info"].index
    )

    api.post(f"/v1/deployments/{deployment_id}/restart")
    converge(reconciler, api.status_is(deployment_id, "ready"))
    reconciler.run_once()
    assert kinds(api, deployment_id) == set()
    assert {a["kind"] for a in alerts_of(api, deployment_id, status="resolved")} == {"crash_loop", "deployment_failed"}
    assert all(a["resolved_at"] for a in alerts_of(api, deployment_id, status="resolved"))


def test_unhealthy_replica(app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler) -> None:
    agent = new_agent(
        app, api, health_check={"path": "/health", "interval_seconds": 0.1, "timeout_seconds": 0.1, "retries": 1}
    )
    deployment_id = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()["id"]
    converge(reconciler, lambda: "replica_unhealthy" in kinds(api, deployment_id))
    [alert] = alerts_of(api, deployment_id)
    assert alert["severity"] == "warning" and "health" in alert["message"]


def test_memory_high_from_samples(app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler) -> None:
    agent = new_agent(app, api, resources={"memory_mb": 1})  # the fake replica 0 uses 1 MiB: 100% of it
    deployment_id = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()["id"]
    converge(reconciler, lambda: "memory_high" in kinds(api, deployment_id))
    assert "100% of its memory limit" in alerts_of(api, deployment_id)[0]["message"]


def test_hallucination_rate_raises_on_evaluations_and_clears(
    app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment_id = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()["id"]
    key = {"X-API-Key": api.post(f"/v1/agents/{agent['id']}/api-key", {}).get_json()["key"]}

    def report(hallucinated: bool) -> None:
        body = {"prompt": "p", "response": "r", "hallucinated": hallucinated}
        assert client.post("/v1/evaluations", headers=key, json=body).status_code == 201

    for flag in (True, True, False, True):
        report(flag)
    [alert] = alerts_of(api, deployment_id)  # raised on the event itself, no pass needed
    assert alert["kind"] == "hallucination_rate_high" and alert["count"] == 1
    report(True)
    assert alerts_of(api, deployment_id)[0]["count"] == 2
    for _ in range(12):
        report(False)
    assert kinds(api, deployment_id) == set()


def test_evaluations_run_the_hallucination_rule_at_most_once_per_interval(
    app: Flask,
    api: Api,
    client: FlaskClient,
    fake_runner: FakeRunner,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule counts the whole window, so an evaluation runs it only when the interval has passed; the
    sampling round still runs it whenever it comes."""
    configure(ALERT_EVENT_RULE_SECONDS=30)
    now = [1000.0]
    monkeypatch.setattr(alerts_service, "event_rules", alerts_service.EventRuleGate(clock=lambda: now[0]))
    rule_runs = []
    real_rule = alerts_service.hallucination_rule
    monkeypatch.setattr(alerts_service, "hallucination_rule", lambda d: rule_runs.append(d.id) or real_rule(d))
    agent = new_agent(app, api)
    deployment_id = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()["id"]
    key = {"X-API-Key": api.post(f"/v1/agents/{agent['id']}/api-key", {}).get_json()["key"]}
    body = {"prompt": "p", "response": "r", "hallucinated": True}

    for _ in range(4):
        assert client.post("/v1/evaluations", headers=key, json=body).status_code == 201
    assert rule_runs == [deployment_id], "the first evaluation ran it; the next three were within 30 s"
    assert kinds(api, deployment_id) == set(), "one evaluation was too few samples, and the rule has not run since"
    now[0] += 30
    assert client.post("/v1/evaluations", headers=key, json=body).status_code == 201
    assert len(rule_runs) == 2 and kinds(api, deployment_id) == {"hallucination_rate_high"}

    rule_runs.clear()
    for _ in range(12):
        assert client.post("/v1/evaluations", headers=key, json={**body, "hallucinated": False}).status_code == 201
    assert rule_runs == [] and kinds(api, deployment_id) == {"hallucination_rate_high"}
    converge(reconciler, lambda: kinds(api, deployment_id) == set())  # the sampling round needs no gate


def test_the_event_rule_gate_forgets_deployments_whose_interval_passed() -> None:
    now = [0.0]
    gate = alerts_service.EventRuleGate(clock=lambda: now[0])
    assert gate.due("a", 10) and not gate.due("a", 10) and gate.due("b", 10)
    assert gate.due("a", 0), "no interval: always due"
    for number in range(gate.PRUNE_AT):
        gate.due(f"d{number}", 10)
    now[0] = 20.0
    assert gate.due("c", 10) and len(gate._last) == 1, "the passed ones were pruned when it grew"
    assert not gate.due("c", 10)


def test_error_rate(app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler) -> None:
    agent = new_agent(app, api)
    deployment_id = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()["id"]
    with app.app_context():
        for number in range(6):
            ok = number % 2 == 0
            db.session.add(
                Invocation(
                    agent_id=agent["id"],
                    deployment_id=deployment_id,
                    replica=0,
                    status_code=200 if ok else 502,
                    ok=ok,
                    latency_ms=1.0,
                )
            )
        db.session.commit()
    converge(reconciler, lambda: "error_rate_high" in kinds(api, deployment_id))
    assert "50%" in alerts_of(api, deployment_id)[0]["message"]


def test_acknowledge_resolve_and_scoping(
    app: Flask, api: Api, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api, image="deploy-test/missing:tag")
    deployment_id = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()["id"]
    converge(reconciler, lambda: "deployment_failed" in kinds(api, deployment_id))
    [alert] = alerts_of(api, deployment_id)
    _, stranger = auth.user()
    assert_error(client.post(f"/v1/alerts/{alert['id']}/acknowledge", headers=stranger), 404, "not_found")
    assert client.get("/v1/deployments/alerts", headers=stranger).get_json()["total"] == 0
    acked = api.post(f"/v1/alerts/{alert['id']}/acknowledge").get_json()
    assert acked["status"] == "acknowledged" and acked["acknowledged_at"]
    assert api.get("/v1/deployments/alerts").get_json()["total"] == 0  # active only
    reconciler.run_once()
    assert alerts_of(api, deployment_id, status="acknowledged")[0]["id"] == alert["id"]  # still open, not duplicated
    resolved = api.post(f"/v1/alerts/{alert['id']}/resolve").get_json()
    assert resolved["status"] == "resolved"
    reconciler.run_once()
    reopened = alerts_of(api, deployment_id, status="active")
    assert len(reopened) == 1 and reopened[0]["id"] != alert["id"]  # the condition persists: a new alert
    api.delete(f"/v1/deployments/{deployment_id}")
    assert kinds(api, deployment_id) == set()
    assert_error(api.get("/v1/alerts?severity=bogus"), 400, "validation_error")
