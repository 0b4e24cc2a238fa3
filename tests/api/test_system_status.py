"""`GET /v1/system/status`: for an admin, whether the database, the engine and the reconciler are healthy and
current, deployments by status and webhook deliveries pending and failed; cheap to poll every second."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.extensions import db
from deploy_service.models import DeploymentStatus, WebhookDelivery
from deploy_service.models.webhook import DeliveryStatus
from deploy_service.reconciler import Reconciler
from deploy_service.services.health import ENGINE_CHECK_KEY
from deploy_service.services.system_info import FACTS_KEY
from deploy_service.settings import Settings
from tests.factories import AuthActions, make_agent, make_deployment, make_user
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, assert_error, wait_until


@pytest.fixture(autouse=True)
def _fresh_engine_caches(app: Flask) -> Iterator[None]:
    """The engine's ping and facts are cached per app: none of these tests sees or leaves another's."""
    for key in (FACTS_KEY, ENGINE_CHECK_KEY):
        app.extensions.pop(key, None)
    yield
    for key in (FACTS_KEY, ENGINE_CHECK_KEY):
        app.extensions.pop(key, None)


def _status(client: FlaskClient, auth: AuthActions) -> dict[str, Any]:
    _, headers = auth.admin()
    response = client.get("/v1/system/status", headers=headers)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_an_admin_sees_every_part_and_the_counts(
    app: Flask,
    client: FlaskClient,
    auth: AuthActions,
    api: Api,
    fake_runner: FakeRunner,
    configure: Callable[..., Settings],
) -> None:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
    owner = make_user(app)
    for _ in range(2):
        make_deployment(app, owner, make_agent(app, owner)["id"])
    webhook = api.post("/v1/webhooks", {"url": "http://127.0.0.1:9/x", "severities": ["critical"]}).get_json()
    with app.app_context():
        for status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED, DeliveryStatus.FAILED, DeliveryStatus.SUCCEEDED):
            db.session.add(WebhookDelivery(webhook_id=webhook["id"], event="alert.raised", payload={}, status=status))
        db.session.commit()

    body = _status(client, auth)
    assert list(body) == ["version", "uptime_seconds", "database", "engine", "reconciler", "deployments", "webhooks"]
    assert body["version"] == client.get("/health").get_json()["version"] and body["uptime_seconds"] >= 0
    with app.app_context():
        kind = db.engine.dialect.name
    database = body["database"]
    assert database["kind"] == kind and database["ok"] is True
    assert database["migration"] == database["latest"] and database["latest"]
    assert body["engine"] == {"ok": True, "kind": "fake", "version": "fake-1.0"}
    expected = {status.value: 0 for status in DeploymentStatus}
    expected["deploying"] = 2
    assert body["deployments"]["by_status"] == expected
    assert body["webhooks"] == {"pending": 1, "failed": 2}
    # No reconciler has passed yet, and this process runs none.
    assert body["reconciler"] == {
        "leader": None,
        "holder": None,
        "last_pass_at": None,
        "last_pass_seconds": None,
        "seconds_since_last_pass": None,
    }


def test_the_reconcilers_last_pass_its_duration_and_whether_this_process_leads(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    reconciler = Reconciler(app, runner=fake_runner, settings=FAST)
    reconciler.start()
    try:
        wait_until(lambda: _status(client, auth)["reconciler"]["leader"] is True, what="this process leads")
        passed = wait_until(lambda: _status(client, auth)["reconciler"]["last_pass_at"] and _status(client, auth))
        seen = passed["reconciler"]
        assert seen["holder"] and ":" in seen["holder"]
        assert isinstance(seen["last_pass_seconds"], float) and 0 <= seen["last_pass_seconds"] < 10
        assert 0 <= seen["seconds_since_last_pass"] < 60
    finally:
        reconciler.stop()
        reconciler.close()
    assert _status(client, auth)["reconciler"]["leader"] is None  # the loop ended: this process runs none


def test_an_engine_that_does_not_answer_is_shown_not_ok_and_the_answer_is_still_200(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner, configure: Callable[..., Settings]
) -> None:
    configure(HEALTH_ENGINE_CACHE_SECONDS=0)
    fake_runner.down = True
    engine = _status(client, auth)["engine"]
    assert engine["ok"] is False and engine["version"] is None and "down" in engine["error"]
    fake_runner.down = False
    assert _status(client, auth)["engine"] == {"ok": True, "kind": "fake", "version": "fake-1.0"}


def test_polling_asks_the_engine_once_per_cache_period(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner, configure: Callable[..., Settings]
) -> None:
    configure(HEALTH_ENGINE_CACHE_SECONDS=3600)
    fake_runner.calls.clear()
    for _ in range(5):
        _status(client, auth)
    assert fake_runner.calls.count("engine_version") == 1 and fake_runner.calls.count("ping") == 1


def test_only_an_admin(client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.user()
    assert_error(client.get("/v1/system/status", headers=headers), 403, "forbidden")
    assert_error(client.get("/v1/system/status"), 401, "unauthorized")
