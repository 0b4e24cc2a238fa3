"""Per-deployment metrics from the reconciler's resource samples (in-memory runner, fixed stats)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from deploy_service.extensions import db
from deploy_service.models import ContainerSample, Invocation
from deploy_service.models.types import utcnow
from deploy_service.reconciler import Reconciler
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, assert_error, converge, new_agent

SAMPLING = dataclasses.replace(FAST, sample_every=0.05, sample_retention_hours=1.0)


@pytest.fixture()
def reconciler(app: Flask, fake_runner: FakeRunner) -> Iterator[Reconciler]:
    reconciler = Reconciler(app, runner=fake_runner, settings=SAMPLING)
    yield reconciler
    reconciler.close()


def samples(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(ContainerSample)) or 0


def test_metrics_from_samples(app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler) -> None:
    agent = new_agent(app, api, resources={"memory_mb": 64})
    deployment = api.post(f"/v1/agents/{agent['id']}/deploy", {"replicas": 2}).get_json()
    url = f"/v1/deployments/{deployment['id']}/metrics"
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    converge(reconciler, lambda: api.get(url).get_json()["cpu_percent"] is not None)
    body = api.get(url).get_json()
    assert body["deployment_id"] == deployment["id"] and body["status"] == "ready"
    assert body["replicas"] == {"desired": 2, "running": 2, "ready": 2}
    assert body["cpu_percent"] == 100.0  # 50% of a core on each of two replicas
    assert body["memory_bytes"] == (1 + 2) * 1024 * 1024
    assert body["memory_limit_bytes"] == 2 * 64 * 1024 * 1024
    assert body["sampled_at"] and body["uptime_seconds"] >= 0 and body["restarts"] == 0
    assert [(i["index"], i["cpu_percent"], i["memory_bytes"]) for i in body["instances"]] == [
        (0, 50.0, 1024 * 1024),
        (1, 50.0, 2 * 1024 * 1024),
    ]
    assert body["invocations"] == {"count": 0, "errors": 0, "p50_ms": None, "p95_ms": None}
    with app.app_context():
        for latency in (5.0, 7.0, 9.0):
            db.session.add(
                Invocation(
                    agent_id=agent["id"],
                    deployment_id=deployment["id"],
                    replica=0,
                    status_code=200,
                    ok=True,
                    latency_ms=latency,
                )
            )
        db.session.commit()
    assert api.get(url).get_json()["invocations"] == {"count": 3, "errors": 0, "p50_ms": 7.0, "p95_ms": 9.0}
    assert_error(api.get(f"/v1/deployments/{deployment['id']}/metrics?hours=0"), 400, "validation_error")


def test_samples_expire_and_stopped_deployments_show_none(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()
    converge(reconciler, lambda: samples(app) >= 2)
    with app.app_context():
        db.session.execute(update(ContainerSample).values(sampled_at=utcnow() - timedelta(hours=2)))
        db.session.commit()

    def only_fresh_samples() -> bool:
        with app.app_context():
            oldest = db.session.scalar(select(func.min(ContainerSample.sampled_at)))
        return oldest is not None and oldest > utcnow() - timedelta(hours=1)

    converge(reconciler, only_fresh_samples)
    assert api.get(f"/v1/deployments/{deployment['id']}/metrics").get_json()["sampled_at"] is not None
    api.post(f"/v1/deployments/{deployment['id']}/stop")
    converge(reconciler, api.status_is(deployment["id"], "stopped"))
    stopped = api.get(f"/v1/deployments/{deployment['id']}/metrics").get_json()
    assert stopped["cpu_percent"] is None and stopped["instances"] == [] and stopped["uptime_seconds"] == 0.0


def test_metrics_are_owner_scoped(
    app: Flask, api: Api, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    agent = new_agent(app, api)
    deployment = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()
    _, stranger = auth.user()
    assert_error(client.get(f"/v1/deployments/{deployment['id']}/metrics", headers=stranger), 404, "not_found")
