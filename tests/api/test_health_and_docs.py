"""Health routes, documentation routes and the SQLite settings the service relies on.

Readiness also asks the engine; these tests answer it with the in-memory runner (`fake_runner`), so
they need no engine. The real engine's answer is tested in tests/integration and tests/faults.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from deploy_service.extensions import db
from deploy_service.models import ReconcilerHeartbeat
from deploy_service.models.types import utcnow
from deploy_service.reconciler import Reconciler
from deploy_service.reconciler.heartbeat import Heartbeat
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import settings_for
from tests.fakes import FakeRunner


def test_liveness_reports_version_and_uptime(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["version"]
    assert body["uptime_seconds"] >= 0


def test_database_health(client: FlaskClient, app: Flask) -> None:
    response = client.get("/health/db")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    with app.app_context():
        assert body["backend"] == db.engine.dialect.name


@pytest.fixture()
def started_long_ago(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process started well over `RECONCILER_STALE_SECONDS` ago."""
    stale = settings_for(app).loop.stale
    monkeypatch.setitem(app.config, "STARTED_MONOTONIC", time.monotonic() - 10 * stale)


def test_ready_when_database_is_migrated(client: FlaskClient, reconciler: Reconciler, fake_runner: FakeRunner) -> None:
    reconciler.run_once()
    response = client.get("/health/ready")
    assert response.status_code == 200, response.get_json()
    checks = response.get_json()["checks"]
    assert checks["engine"]["status"] == "ok"
    assert "ping" in fake_runner.calls
    assert checks["database"]["status"] == "ok"
    assert checks["migrations"]["status"] == "ok"
    assert checks["migrations"]["current"] == checks["migrations"]["head"]
    assert checks["reconciler"]["status"] == "ok" and checks["reconciler"]["last_pass_at"]


def test_not_ready_when_the_engine_is_down(client: FlaskClient, fake_runner: FakeRunner) -> None:
    fake_runner.down = True
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["engine"]["status"] == "error"
    assert response.get_json()["checks"]["database"]["status"] == "ok"


def test_not_ready_when_migrations_are_behind(client: FlaskClient, app: Flask, reconciler: Reconciler) -> None:
    reconciler.run_once()
    with app.app_context():
        revision = db.session.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        db.session.execute(text("UPDATE alembic_version SET version_num = 'f00000000000'"))
        db.session.commit()
    try:
        response = client.get("/health/ready")
        assert response.status_code == 503
        body = response.get_json()
        assert body["status"] == "error"
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["migrations"]["status"] == "error"
        assert body["checks"]["migrations"]["current"] == ["f00000000000"]
        assert body["checks"]["reconciler"] == {"status": "skipped"}
    finally:
        with app.app_context():
            db.session.execute(text("UPDATE alembic_version SET version_num = :rev"), {"rev": revision})
            db.session.commit()
    assert client.get("/health/ready").status_code == 200


def set_last_pass(app: Flask, seconds_ago: float) -> None:
    with app.app_context():
        db.session.add(
            ReconcilerHeartbeat(
                name="reconciler", last_pass_at=utcnow() - timedelta(seconds=seconds_ago), holder="elsewhere:1"
            )
        )
        db.session.commit()


@pytest.mark.usefixtures("started_long_ago", "fake_runner")
def test_not_ready_when_no_reconciler_completed_a_pass_lately(client: FlaskClient, app: Flask) -> None:
    stale = settings_for(app).loop.stale
    set_last_pass(app, stale + 5)
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "migrations": "ok",
        "engine": "ok",
        "reconciler": "error",
    }
    assert "has completed a pass" in body["checks"]["reconciler"]["error"]


@pytest.mark.usefixtures("started_long_ago")
def test_a_pass_of_a_reconciler_in_another_process_makes_it_ready(
    client: FlaskClient, app: Flask, reconciler: Reconciler
) -> None:
    stale = settings_for(app).loop.stale
    set_last_pass(app, stale - 5)  # written by `flask reconcile` elsewhere: this process runs none
    assert client.get("/health/ready").status_code == 200
    with app.app_context():
        db.session.execute(text("DELETE FROM reconciler_heartbeat"))
        db.session.commit()
    assert client.get("/health/ready").status_code == 503
    reconciler.run_once()
    assert client.get("/health/ready").status_code == 200


@pytest.mark.usefixtures("fake_runner")
def test_a_fresh_deploy_gets_the_stale_period_from_its_start(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No heartbeat row yet (or an old one): the reconciler has `RECONCILER_STALE_SECONDS` from this start."""
    stale = settings_for(app).loop.stale
    monkeypatch.setitem(app.config, "STARTED_MONOTONIC", time.monotonic() - stale + 5)
    body = client.get("/health/ready").get_json()
    assert body["checks"]["reconciler"]["status"] == "ok" and body["checks"]["reconciler"]["last_pass_at"] is None
    set_last_pass(app, 10 * stale)
    assert client.get("/health/ready").status_code == 200
    monkeypatch.setitem(app.config, "STARTED_MONOTONIC", time.monotonic() - stale - 5)
    assert client.get("/health/ready").status_code == 503


def test_the_heartbeat_is_written_at_most_once_per_period(app: Flask) -> None:
    now = [0.0]
    heartbeat = Heartbeat(every=15.0, clock=lambda: now[0])

    def last_pass() -> Any:
        with app.app_context():
            heartbeat.beat()
            written = db.session.get(ReconcilerHeartbeat, "reconciler")
            assert written is not None
            return written.last_pass_at

    first = last_pass()
    now[0] = 14.0
    assert last_pass() == first
    now[0] = 15.0
    assert last_pass() > first


def test_not_ready_when_database_is_down(make_app: Any, tmp_path: Any) -> None:
    broken = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/missing-dir/nested/x.db")
    broken.extensions[RUNNER_KEY] = FakeRunner()
    response = broken.test_client().get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"]["status"] == "error"
    assert broken.test_client().get("/health/db").status_code == 503
    assert broken.test_client().get("/health").status_code == 200


def test_openapi_spec_lists_every_route(client: FlaskClient, app: Flask) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "bearerAuth" in spec["components"]["securitySchemes"]
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/v1") or rule.rule.startswith("/health")):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
    error = spec["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"success", "error", "message", "details"}
    # Validation errors are documented as 400, not webargs' default 422.
    assert "400" in spec["paths"]["/v1/agents"]["post"]["responses"]
    assert "422" not in spec["paths"]["/v1/agents"]["post"]["responses"]


def test_spec_is_openapi_3_1(client: FlaskClient) -> None:
    """3.1 (JSON Schema 2020-12): `null` is a type and `propertyNames` is a keyword; 3.0's `nullable` is gone."""
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    assert '"nullable"' not in json.dumps(spec)
    schemas = spec["components"]["schemas"]
    assert schemas["Agent"]["properties"]["description"]["type"] == ["string", "null"]
    assert {"$ref": "#/components/schemas/Source"} in schemas["Agent"]["properties"]["source"]["anyOf"]
    assert {"type": "null"} in schemas["Agent"]["properties"]["source"]["anyOf"]
    assert "pattern" in schemas["AgentInput"]["properties"]["env"]["propertyNames"]


def test_swagger_ui_is_served_locally(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/swagger-ui/swagger-ui-bundle.js" in html
    assert "/openapi.json" in html
    asset = client.get("/swagger-ui/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.get_data()) > 100_000
    # Swagger UI 5 renders OpenAPI 3.1 (version 4 refuses it: "does not specify a valid version field").
    assert b"isOAS31" in asset.get_data()


def test_redoc_is_served_locally(client: FlaskClient) -> None:
    page = client.get("/redoc")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<script src="/redoc-ui/redoc.standalone.js">' in html, "no CDN: the bundle comes from this service"
    assert "/openapi.json" in html
    asset = client.get("/redoc-ui/redoc.standalone.js")
    assert asset.status_code == 200
    assert asset.mimetype in {"text/javascript", "application/javascript"}
    assert len(asset.get_data()) > 500_000 and b"Redoc" in asset.get_data()
    assert client.get("/redoc-ui/../../__init__.py").status_code == 404


def test_sqlite_runs_in_wal_mode_with_foreign_keys(app: Flask) -> None:
    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            pytest.skip("SQLite-only settings")
        with db.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == app.config["SQLITE_BUSY_TIMEOUT_MS"]
