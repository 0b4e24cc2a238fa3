"""Evaluations (agent telemetry) and per-agent stats, checked against hand-computed figures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from deploy_service.extensions import db
from deploy_service.models import Deployment, Evaluation, Invocation
from deploy_service.models.types import utcnow
from deploy_service.schemas.evaluation import EvaluationSchema
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import Api, assert_error, new_agent


def key_for(api: Api, agent_id: str, scopes: list[str] | None = None) -> dict[str, str]:
    body = {"scopes": scopes} if scopes else {}
    return {"X-API-Key": api.post(f"/v1/agents/{agent_id}/api-key", body).get_json()["key"]}


SAMPLES = [
    {
        "semantic_drift": 0.1,
        "uncertainty": 0.2,
        "factual_support": 0.9,
        "hallucination_probability": 0.1,
        "latency_sec": 1.0,
        "throughput_qps": 10.0,
    },
    {
        "semantic_drift": 0.3,
        "uncertainty": 0.4,
        "factual_support": 0.5,
        "hallucination_probability": 0.8,
        "latency_sec": 2.0,
        "throughput_qps": 20.0,
    },
    {"semantic_drift": 0.5, "uncertainty": 0.6, "factual_support": 0.1, "hallucinated": True, "latency_sec": 3.0},
    {"semantic_drift": 0.7, "factual_support": 0.3, "hallucinated": False, "latency_sec": 6.0, "throughput_qps": 30.0},
]


def post_samples(client: FlaskClient, key: dict[str, str]) -> None:
    for number, sample in enumerate(SAMPLES):
        response = client.post("/v1/evaluations", headers=key, json={"prompt": f"p{number}", "response": "r", **sample})
        assert response.status_code == 201, response.get_json()


def test_stats_match_hand_computed_values(app: Flask, api: Api, client: FlaskClient) -> None:
    agent = new_agent(app, api)
    post_samples(client, key_for(api, agent["id"]))
    stats = api.get(f"/v1/evaluations/stats?agent_id={agent['id']}").get_json()
    assert stats == {
        "total_evaluations": 4,
        "total_hallucinations": 2,  # sample 2 by probability 0.8, sample 3 flagged
        "hallucination_rate": 0.5,
        "avg_latency": 3.0,
        "avg_throughput": 20.0,
        "avg_semantic_drift": 0.4,
        "avg_uncertainty": 0.4,
        "avg_factual_support": 0.45,
    }
    assert api.get("/v1/evaluations/stats").get_json() == stats
    empty = new_agent(app, api)
    assert api.get(f"/v1/evaluations/stats?agent_id={empty['id']}").get_json()["hallucination_rate"] == 0.0


def test_stats_window_and_scoping(app: Flask, api: Api, client: FlaskClient, auth: AuthActions) -> None:
    agent = new_agent(app, api)
    post_samples(client, key_for(api, agent["id"]))
    with app.app_context():
        db.session.execute(
            update(Evaluation).where(Evaluation.prompt == "p3").values(created_at=utcnow() - timedelta(days=10))
        )
        db.session.commit()
    assert api.get("/v1/evaluations/stats?days=7").get_json()["total_evaluations"] == 3
    assert api.get("/v1/evaluations/stats?days=30").get_json()["total_evaluations"] == 4
    _, stranger = auth.user()
    assert client.get("/v1/evaluations/stats", headers=stranger).get_json()["total_evaluations"] == 0
    assert client.get("/v1/evaluations", headers=stranger).get_json()["total"] == 0
    assert_error(client.get(f"/v1/evaluations/stats?agent_id={agent['id']}", headers=stranger), 404, "not_found")
    _, admin = auth.admin()
    assert client.get("/v1/evaluations/stats?days=30", headers=admin).get_json()["total_evaluations"] == 4


def test_list_filters(app: Flask, api: Api, client: FlaskClient) -> None:
    agent = new_agent(app, api)
    post_samples(client, key_for(api, agent["id"]))
    listing = api.get("/v1/evaluations").get_json()
    assert [item["prompt"] for item in listing["items"]] == ["p3", "p2", "p1", "p0"]
    flagged = api.get("/v1/evaluations?hallucinated=true").get_json()
    assert {item["prompt"] for item in flagged["items"]} == {"p1", "p2"}
    since = listing["items"][1]["created_at"]
    newer = api.client.get("/v1/evaluations", headers=api.headers, query_string={"since": since}).get_json()
    assert [item["prompt"] for item in newer["items"]] == ["p3", "p2"]
    assert api.get(f"/v1/evaluations?agent_id={agent['id']}&limit=1").get_json()["limit"] == 1


def test_posting_rules(app: Flask, api: Api, client: FlaskClient) -> None:
    agent, other = new_agent(app, api), new_agent(app, api)
    key = key_for(api, agent["id"])
    base = {"prompt": "p", "response": "r"}
    by_owner = api.post("/v1/evaluations", {**base, "agent_id": agent["id"]})
    assert by_owner.status_code == 201 and by_owner.get_json()["agent_id"] == agent["id"]
    unnamed = assert_error(api.post("/v1/evaluations", base), 404, "not_found")
    assert unnamed["message"] == "Name the agent: evaluations posted with a user token need `agent_id`."
    assert unnamed["details"] == {"agent_id": ["Missing."]}
    assert_error(client.post("/v1/evaluations", headers=key, json={**base, "agent_id": other["id"]}), 404, "not_found")
    by_key = client.post("/v1/evaluations", headers=key, json=base)
    assert by_key.status_code == 201 and by_key.get_json()["hallucinated"] is False
    for bad in ({"uncertainty": 1.5}, {"semantic_drift": -0.1}, {"latency_sec": -1}, {"bogus": 1}, {"prompt": None}):
        assert_error(client.post("/v1/evaluations", headers=key, json={**base, **bad}), 400, "validation_error")
    invoke_only = key_for(api, agent["id"], ["invoke"])
    assert_error(client.post("/v1/evaluations", headers=invoke_only, json=base), 403, "forbidden")
    assert_error(client.get("/v1/evaluations", headers=invoke_only), 403, "forbidden")
    assert_error(client.get("/v1/evaluations/stats", headers=invoke_only), 403, "forbidden")


def test_a_telemetry_key_reads_its_own_agents_evaluations_and_stats(app: Flask, api: Api, client: FlaskClient) -> None:
    """As seed 004's SDK does: the agent's key (scope `telemetry`) lists and sums its own agent's evaluations only."""
    agent, other = new_agent(app, api), new_agent(app, api)
    key, other_key = key_for(api, agent["id"], ["telemetry"]), key_for(api, other["id"], ["telemetry"])
    for prompt, hallucinated in (("a1", True), ("a2", False)):
        body = {"prompt": prompt, "response": "r", "hallucinated": hallucinated, "latency_sec": 0.5}
        assert client.post("/v1/evaluations", headers=key, json=body).status_code == 201
    assert client.post("/v1/evaluations", headers=other_key, json={"prompt": "b1", "response": "r"}).status_code == 201
    listing = client.get("/v1/evaluations", headers=key).get_json()
    assert [item["prompt"] for item in listing["items"]] == ["a2", "a1"] and listing["total"] == 2
    flagged = client.get("/v1/evaluations?hallucinated=true", headers=key).get_json()
    assert [item["prompt"] for item in flagged["items"]] == ["a1"]
    stats = client.get("/v1/evaluations/stats?days=1", headers=key).get_json()
    assert stats["total_evaluations"] == 2 and stats["total_hallucinations"] == 1 and stats["hallucination_rate"] == 0.5
    assert stats["avg_latency"] == 0.5
    assert client.get(f"/v1/evaluations/stats?agent_id={agent['id']}", headers=key).status_code == 200
    for url in (f"/v1/evaluations?agent_id={other['id']}", f"/v1/evaluations/stats?agent_id={other['id']}"):
        assert_error(client.get(url, headers=key), 404, "not_found")
    assert client.get("/v1/evaluations/stats", headers=other_key).get_json()["total_evaluations"] == 1


def test_a_posted_evaluation_answers_what_the_schema_shows_of_the_stored_row(
    app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner
) -> None:
    """The post answers the row it inserted without reading it back: the same body the schema dumps of it."""
    agent = new_agent(app, api)
    deployment = api.post("/v1/deployments", {"agent_id": agent["id"]}).get_json()
    key = key_for(api, agent["id"])
    for sample in ({"prompt": "p", "response": "r"}, {"prompt": "p", "response": "r", **SAMPLES[1], "mode": "m"}):
        response = client.post("/v1/evaluations", headers=key, json=sample)
        assert response.status_code == 201 and response.mimetype == "application/json"
        body = response.get_json()
        with app.app_context():
            stored = db.session.get(Evaluation, body["id"])
            expected = EvaluationSchema().dump(stored)
        assert body == expected and list(body) == list(expected)
        assert body["deployment_id"] == deployment["id"] and body["created_at"].endswith("+00:00")


def test_an_evaluation_is_filed_under_its_agents_live_deployment_if_there_is_one(
    app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner
) -> None:
    """The insert finds the live deployment itself: none before a deploy, the deployment while it lives, none once
    it is killed, and the answer says the same as the stored row."""
    agent = new_agent(app, api)
    key = key_for(api, agent["id"])

    def filed_under() -> str | None:
        response = client.post("/v1/evaluations", headers=key, json={"prompt": "p", "response": "r"})
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        with app.app_context():
            stored = db.session.get(Evaluation, body["id"])
            assert stored is not None and stored.deployment_id == body["deployment_id"]
        return body["deployment_id"]

    assert filed_under() is None
    deployment = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()
    assert filed_under() == deployment["id"]
    with app.app_context():
        db.session.execute(update(Deployment).where(Deployment.id == deployment["id"]).values(status="killed"))
        db.session.commit()
    assert filed_under() is None


def test_agent_stats(app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner) -> None:
    agent = new_agent(app, api)
    post_samples(client, key_for(api, agent["id"]))
    deployment = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()
    latencies = [float(value) for value in range(1, 21)]  # 1..20 ms
    with app.app_context():
        for number, latency in enumerate(latencies):
            db.session.add(
                Invocation(
                    agent_id=agent["id"],
                    deployment_id=deployment["id"],
                    replica=0,
                    status_code=502 if number % 5 == 0 else 200,
                    ok=number % 5 != 0,
                    latency_ms=latency,
                )
            )
        db.session.add(
            Invocation(
                agent_id=agent["id"],
                deployment_id=deployment["id"],
                replica=0,
                status_code=200,
                ok=True,
                latency_ms=999.0,
                created_at=utcnow() - timedelta(days=3),
            )
        )
        db.session.commit()
    stats = api.get(f"/v1/agents/{agent['id']}/stats").get_json()
    assert stats["invocations"] == {"count": 20, "errors": 4, "p50_ms": 10.0, "p95_ms": 19.0}
    assert stats["evaluations"]["total_evaluations"] == 4
    assert stats["deployment_id"] == deployment["id"] and stats["deployment_status"] == "deploying"
    assert stats["restarts"] == 0 and stats["uptime_seconds"] == 0.0 and stats["window_hours"] == 24
    week: dict[str, Any] = api.get(f"/v1/agents/{agent['id']}/stats?hours=168").get_json()
    assert week["invocations"]["count"] == 21
    assert_error(api.get(f"/v1/agents/{agent['id']}/stats?hours=0"), 400, "validation_error")
