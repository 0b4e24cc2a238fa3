"""`GET /v1/deployments/metrics`, against figures computed by hand from rows set up here."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient

from deploy_service.extensions import db
from deploy_service.models import Alert, Deployment, DeploymentEvent, Instance, Invocation
from deploy_service.models.types import utcnow
from tests.factories import AuthActions, make_agent, make_user


def test_system_metrics_by_hand(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    user, headers = auth.user()
    other = make_user(app)
    agents = [make_agent(app, user) for _ in range(4)]
    foreign = make_agent(app, other)
    now = utcnow()
    with app.app_context():

        def deployment(
            agent: dict, status: str, *, age: float, to_running: float | None, owner: str = user.id
        ) -> Deployment:
            created = now - timedelta(hours=age)
            row = Deployment(
                agent_id=agent["id"],
                owner_id=owner,
                status=status,
                created_at=created,
                started_at=created + timedelta(seconds=to_running) if to_running is not None else None,
            )
            db.session.add(row)
            db.session.flush()
            return row

        ready = deployment(agents[0], "ready", age=1, to_running=2.0)
        deployment(agents[1], "running", age=2, to_running=4.0)
        deployment(agents[2], "failed", age=3, to_running=None)
        deployment(agents[3], "killed", age=30, to_running=10.0)
        deployment(agents[3], "deploying", age=0.1, to_running=None)
        theirs = deployment(foreign, "ready", age=1, to_running=1.0, owner=other.id)
        db.session.add_all(
            [
                Instance(deployment_id=ready.id, index=0, container_id="c0", status="running", healthy=True),
                Instance(deployment_id=ready.id, index=1, container_id="c1", status="running", healthy=True),
                Instance(deployment_id=theirs.id, index=0, container_id="c9", status="running", healthy=True),
            ]
        )
        for age_hours in (1, 2, 30):
            db.session.add(
                DeploymentEvent(
                    deployment_id=ready.id,
                    event_type="container_restarted",
                    status="ready",
                    message="m",
                    created_at=now - timedelta(hours=age_hours),
                )
            )
        for severity, status in (("critical", "active"), ("warning", "active"), ("warning", "resolved")):
            db.session.add(
                Alert(
                    deployment_id=ready.id,
                    agent_id=agents[0]["id"],
                    owner_id=user.id,
                    severity=severity,
                    kind=f"k-{severity}-{status}",
                    message="m",
                    status=status,
                )
            )
        for ok in (True, True, True, False):
            db.session.add(
                Invocation(
                    agent_id=agents[0]["id"], deployment_id=ready.id, replica=0, status_code=200, ok=ok, latency_ms=1.0
                )
            )
        db.session.add(
            Invocation(
                agent_id=foreign["id"], deployment_id=theirs.id, replica=0, status_code=500, ok=False, latency_ms=1.0
            )
        )
        db.session.commit()

    body = client.get("/v1/deployments/metrics", headers=headers).get_json()
    assert body == {
        "total_deployments": 5,
        "by_status": {"deploying": 1, "running": 1, "ready": 1, "stopped": 0, "failed": 1, "succeeded": 0, "killed": 1},
        "active_deployments": 3,
        "total_agents": 4,
        "deployed_agents": 4,  # agents 0-2 and agent 3's deploying one
        "replicas_running": 2,
        "deploy_success_rate_24h": round(2 / 3, 4),  # ready + running of ready, running, failed
        "avg_deploy_seconds": 3.0,
        "p95_deploy_seconds": 4.0,
        "restarts_24h": 2,
        "active_alerts": {"critical": 1, "warning": 1, "info": 0},
        "invocations_24h": 4,
        "error_rate_24h": 0.25,
    }
    _, admin = auth.admin()
    everything = client.get("/v1/deployments/metrics", headers=admin).get_json()
    assert everything["total_deployments"] == 6 and everything["replicas_running"] == 3
    assert everything["invocations_24h"] == 5 and everything["error_rate_24h"] == 0.4
