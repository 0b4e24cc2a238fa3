"""`GET /metrics` (Prometheus): counts from every gunicorn worker, and gauges read from the database."""

from __future__ import annotations

import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.factories import AuthActions, make_agent
from tests.helpers import Gunicorn, SlowClient, metric


def test_gauges_and_request_counts_in_process(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    before = client.get("/metrics").get_data(as_text=True)
    for _ in range(3):
        client.get("/health")
    user, headers = auth.user()
    make_agent(app, user)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert (
        metric(text, "http_requests_total", route="/health", status="200")
        - metric(before, "http_requests_total", route="/health", status="200")
        == 3
    )
    assert metric(text, "http_request_duration_seconds_count", route="/health") >= 3
    for status in ("deploying", "running", "ready", "stopped", "failed", "killed"):
        assert f'deployments{{status="{status}"}}' in text
    assert "replicas_running " in text and 'alerts_active{severity="critical"}' in text
    assert "deploy_duration_seconds_bucket" in text
    assert "reconcile_pass_duration_seconds" in text


def test_counts_from_every_gunicorn_worker(gunicorn: Gunicorn) -> None:
    base, log = gunicorn(WEB_CONCURRENCY="2", GUNICORN_WORKER_CLASS="sync")

    def call() -> None:
        assert requests.get(f"{base}/health", headers={"Connection": "close"}, timeout=10).status_code == 200

    hold_first = SlowClient(base, {}, path="/health")  # returns once a worker accepted it
    for _ in range(5):
        call()
    hold_second = SlowClient(base, {}, path="/health")
    assert hold_first.finish() == 200
    for _ in range(5):
        call()
    assert hold_second.finish() == 200
    served_by = {line.split()[0] for line in log.read_text().splitlines() if line.endswith(" /health")}
    assert len(served_by) == 2, "both workers served requests"
    text = requests.get(f"{base}/metrics", timeout=10).text
    # 12 /health calls plus the start-up probe(s) of the fixture, counted whichever worker answers.
    assert metric(text, "http_requests_total", route="/health", status="200") >= 12
    assert metric(text, "http_requests_total", route="/health", status="200") == len(
        [line for line in log.read_text().splitlines() if line.endswith(" /health")]
    )
