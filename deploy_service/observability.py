"""Prometheus metrics: HTTP requests, the reconciler's pass time, and gauges read from the database.

A request's latency runs from the moment its request object is made (`application.TimedRequest`) to
its after-request hook. Request counters and latency histograms live in each process; under gunicorn
they are shared through prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set up by
gunicorn.conf.py), so a scrape of any worker sees every worker's counts. Gauges that describe the system (deployments by
status, replicas running, active alerts by severity) and the deploy-duration histogram are computed by
SQL at scrape time, so they are right whichever process answers and need no shared state.

Rollouts are counted by the process that settles them (mostly the reconciler, which writes into the
same multiprocess directory as the web workers, as its pass times do; a stop or delete before ready
settles in the web worker that handled it): `rollouts_total{outcome}` and `rollout_duration_seconds{outcome}`,
one count per release whose rollout ended, `completed` (it became active), `failed` (the deployment
failed, was stopped or deleted, or a newer release replaced it before it was ready) or `rolled_back`
(an automatic rollback went back to the release that still serves). A rollout is counted once the
transaction that settled it commits, so a pass that fails to commit and runs again counts it once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from deploy_service.errors import Unauthorized
from deploy_service.extensions import db
from deploy_service.models import Deployment, Release
from deploy_service.models.types import utcnow
from deploy_service.security import bearer_token_matches
from deploy_service.services.system_metrics import (
    active_alerts_by_severity,
    deploy_seconds_expression,
    deployments_by_status,
    running_replicas,
)
from deploy_service.settings import current_settings

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests handled.", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_PASS = Histogram(
    "reconcile_pass_duration_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEPLOY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600)


class RolloutOutcome(StrEnum):
    """How a release's rollout ended (the `outcome` label)."""

    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


ROLLOUTS = Counter("rollouts_total", "Release rollouts ended, by outcome.", ["outcome"])
ROLLOUT_DURATION = Histogram(
    "rollout_duration_seconds",
    "Time from a release's creation to its activation or failure, by outcome.",
    ["outcome"],
    buckets=DEPLOY_BUCKETS,
)
_ROLLOUTS_KEY = "rollouts_settled"
"""Where a session keeps the rollouts it settled until its transaction commits."""


def count_rollout(release: Release, outcome: RolloutOutcome) -> None:
    """`release`'s rollout ended with `outcome`: counted when the session's transaction commits."""
    ended = release.activated_at or release.ended_at or utcnow()
    seconds = max((ended - (release.created_at or ended)).total_seconds(), 0.0)
    db.session.info.setdefault(_ROLLOUTS_KEY, []).append((outcome, seconds))


@event.listens_for(Session, "after_commit")
def _count_committed_rollouts(session: Session) -> None:
    for outcome, seconds in session.info.pop(_ROLLOUTS_KEY, ()):
        ROLLOUTS.labels(outcome).inc()
        ROLLOUT_DURATION.labels(outcome).observe(seconds)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_rollouts(session: Session) -> None:
    session.info.pop(_ROLLOUTS_KEY, None)


class DatabaseCollector(Collector):
    """Gauges and the deploy-duration histogram, computed by SQL when scraped."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        with self.app.app_context():
            try:
                yield from self._collect()
            finally:
                db.session.remove()

    def _collect(self) -> Iterator[Any]:
        by_status = GaugeMetricFamily("deployments", "Deployments by status.", labels=["status"])
        for status, count in deployments_by_status().items():
            by_status.add_metric([status], count)
        yield by_status
        yield GaugeMetricFamily("replicas_running", "Replicas with a running container.", value=running_replicas())
        alerts = GaugeMetricFamily("alerts_active", "Active alerts by severity.", labels=["severity"])
        for severity, count in active_alerts_by_severity().items():
            alerts.add_metric([severity], count)
        yield alerts
        seconds = deploy_seconds_expression()
        started = Deployment.started_at.is_not(None)
        total, total_seconds = db.session.execute(
            select(func.count(), func.coalesce(func.sum(seconds), 0.0)).where(started)
        ).one()
        buckets = [
            (str(bound), db.session.scalar(select(func.count()).where(started, seconds <= bound)) or 0)
            for bound in DEPLOY_BUCKETS
        ]
        buckets.append(("+Inf", total))
        histogram = HistogramMetricFamily("deploy_duration_seconds", "Time from deploy to running.")
        histogram.add_metric([], buckets, float(total_seconds))
        yield histogram


_Children = tuple[Any, Any]
_children: dict[tuple[str, str, int], _Children] = {}
"""(method, route, status) → its request counter and latency histogram children, made once each.

`labels()` looks the child up under a lock (and, in multiprocess mode, by a key built from the label
values) on every call; the children themselves never change, so each request finds them here instead."""


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods counted by name; any other (a client may send any token) counts as `other`, so made-up
methods add no series."""


def _children_for(method: str, route: str, status: int) -> _Children:
    if method not in METHODS:
        method = "other"
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        children = (HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(method, route))
        _children[key] = children
    return children


def init_metrics(app: Flask) -> None:
    """Count every request and serve `GET /metrics`: open, or behind `METRICS_TOKEN` as a bearer token."""

    @app.after_request
    def _count(response: Response) -> Response:
        current: Any = request._get_current_object()  # type: ignore[attr-defined]
        if current.path != "/metrics":
            rule = current.url_rule
            requests, latency = _children_for(
                current.method, rule.rule if rule is not None else "unmatched", response.status_code
            )
            requests.inc()
            latency.observe(time.perf_counter() - current.started)
        return response

    database = CollectorRegistry()
    database.register(DatabaseCollector(app))

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition: every worker's request metrics, and the system's gauges.

        Raises:
            Unauthorized: `METRICS_TOKEN` is set and the request does not bear it.
        """
        token = current_settings().auth.metrics_token
        if token and not bearer_token_matches(request.headers.get("Authorization"), token):
            raise Unauthorized(
                "GET /metrics needs METRICS_TOKEN as a bearer token.",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            processes = CollectorRegistry()
            MultiProcessCollector(processes)
        else:
            processes = REGISTRY
        return Response(generate_latest(processes) + generate_latest(database), mimetype=CONTENT_TYPE_LATEST)
