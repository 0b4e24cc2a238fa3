"""Alerts: the rules that raise and clear them, and what users do with them.

Each rule looks at one deployment and answers "is the condition there, and what does this occurrence
look like" (a signature). `observe` keeps one open alert per (deployment, kind): it opens one, raises
its `count` when the signature changes (a new crash, a new rate), and resolves it when the condition
clears. The reconciler runs the cheap rules every pass and the ones that aggregate telemetry every
sampling round; posting evaluations runs the hallucination rule at once. Thresholds are settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select

from deploy_service.errors import NotFound
from deploy_service.extensions import db
from deploy_service.models import (
    SERVING,
    WITHOUT_REPLICAS,
    Alert,
    AlertKind,
    AlertSeverity,
    AlertStatus,
    Deployment,
    DeploymentStatus,
    Evaluation,
    InstanceStatus,
    Invocation,
    Principal,
)
from deploy_service.models.alert import ALERT_OPEN, SEVERITY_RANK
from deploy_service.models.types import utcnow
from deploy_service.models.webhook import WebhookEvent
from deploy_service.services import lifecycle, webhooks
from deploy_service.services.common import Page, paginate, scope_to_owner
from deploy_service.services.samples import latest_samples
from deploy_service.settings import current_settings

SEVERITY: dict[str, AlertSeverity] = {
    AlertKind.DEPLOYMENT_FAILED: AlertSeverity.CRITICAL,
    AlertKind.CRASH_LOOP: AlertSeverity.CRITICAL,
    AlertKind.REPLICA_UNHEALTHY: AlertSeverity.WARNING,
    AlertKind.MEMORY_HIGH: AlertSeverity.WARNING,
    AlertKind.HALLUCINATION_RATE_HIGH: AlertSeverity.WARNING,
    AlertKind.ERROR_RATE_HIGH: AlertSeverity.WARNING,
    AlertKind.ROLLOUT_FAILED: AlertSeverity.WARNING,
}
_CHECKED = frozenset({DeploymentStatus.DEPLOYING, *SERVING})
"""Where replicas are health-checked, so a failing check is worth an alert."""
Finding = tuple[str, dict[str, Any]] | None
"""A rule's answer: (message, signature) when the condition holds, else None."""


class EventRuleGate:
    """Whether an event may run a deployment's rule now: at most once per `interval` seconds per
    deployment and process.

    The rules that aggregate a window (the hallucination rate counts an hour of evaluations) cost what
    the window holds, so running one on every event made each evaluation slower than the last (the load
    test's writes fell to a third in a minute). The sampling round runs every rule anyway; the gate only
    decides when an event runs one sooner. Thread-safe; forgets deployments whose interval has passed
    when it holds more than `PRUNE_AT`.
    """

    PRUNE_AT = 1024

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, deployment_id: str, interval: float) -> bool:
        """True (and the run noted) when the deployment's rule last ran `interval` seconds ago or more."""
        if interval <= 0:
            return True
        now = self._clock()
        with self._lock:
            last = self._last.get(deployment_id)
            if last is not None and now - last < interval:
                return False
            self._last[deployment_id] = now
            if len(self._last) > self.PRUNE_AT:
                self._last = {key: at for key, at in self._last.items() if now - at < interval}
            return True


event_rules = EventRuleGate()
"""This process's gate for the rules that events run (`services.evaluations`)."""


OpenAlerts = dict[tuple[str, str], Alert]
"""Open alerts by (deployment id, kind): read once per reconcile pass, not once per rule and deployment."""


def open_alerts() -> OpenAlerts:
    """Every open alert, keyed for `observe`."""
    rows = db.session.scalars(select(Alert).where(Alert.status.in_(ALERT_OPEN)))
    return {(alert.deployment_id, alert.kind): alert for alert in rows}


def observe(deployment: Deployment, kind: str, finding: Finding, *, known: OpenAlerts | None = None) -> Alert | None:
    """Open, repeat or resolve the deployment's alert of `kind` according to `finding` (caller commits).

    `known` (from `open_alerts`) saves the lookup; without it the open alert is queried.
    """
    if known is not None:
        alert = known.get((deployment.id, kind))
    else:
        alert = db.session.scalar(
            select(Alert).where(Alert.deployment_id == deployment.id, Alert.kind == kind, Alert.status.in_(ALERT_OPEN))
        )
    now = utcnow()
    if finding is None:
        if alert is not None:
            alert.status, alert.resolved_at = AlertStatus.RESOLVED, now
            webhooks.enqueue(alert, WebhookEvent.ALERT_RESOLVED)
            if known is not None:
                known.pop((deployment.id, kind), None)
        return alert
    message, signature = finding
    if alert is None:
        alert = Alert(
            deployment_id=deployment.id,
            agent_id=deployment.agent_id,
            owner_id=deployment.owner_id,
            severity=SEVERITY[kind],
            kind=kind,
            message=message,
            signature=signature,
            first_seen_at=now,
            last_seen_at=now,
        )
        db.session.add(alert)
        lifecycle.record_event(deployment, "alert_raised", message, {"kind": kind, "severity": SEVERITY[kind]})
        webhooks.enqueue(alert, WebhookEvent.ALERT_RAISED)
        if known is not None:
            known[(deployment.id, kind)] = alert
    elif alert.signature != signature:
        alert.count += 1
        alert.message, alert.signature, alert.last_seen_at = message, signature, now
    return alert


# -- rules ---------------------------------------------------------------------------------------


def failed_rule(deployment: Deployment) -> Finding:
    if deployment.status != DeploymentStatus.FAILED:
        return None
    return f"Deployment failed: {deployment.error}", {"error": deployment.error}


def crash_loop_rule(deployment: Deployment) -> Finding:
    threshold = current_settings().alerts.crash_loop_restarts
    looping = [i for i in deployment.instances if i.recent_restarts >= threshold]
    if not looping or deployment.status in WITHOUT_REPLICAS:
        return None
    worst = max(looping, key=lambda instance: instance.recent_restarts)
    message = (
        f"Replica {worst.index} is crash-looping ({worst.recent_restarts} restarts, last exit code {worst.exit_code})."
    )
    return message, {"restarts": sum(i.restarts for i in deployment.instances)}


def unhealthy_rule(deployment: Deployment) -> Finding:
    if deployment.status not in _CHECKED:
        return None
    sick = sorted(i.index for i in deployment.instances if i.healthy is False and i.status == InstanceStatus.RUNNING)
    if not sick:
        return None
    return f"Replica(s) {', '.join(map(str, sick))} failing health checks.", {"replicas": sick}


def memory_rule(deployment: Deployment, *, oom_recently: bool) -> Finding:
    if deployment.status in WITHOUT_REPLICAS:
        return None
    if oom_recently:
        return "A replica was killed for running out of memory.", {"oom": True}
    current = [i.container_id for i in deployment.instances if i.container_id and i.running]
    if not current:
        return None
    ratio = current_settings().alerts.memory_high_ratio
    high = [
        sample
        for sample in latest_samples(deployment.id, current).values()
        if sample.memory_limit_bytes and sample.memory_bytes / sample.memory_limit_bytes >= ratio
    ]
    if not high:
        return None
    worst = max(high, key=lambda sample: sample.memory_bytes / sample.memory_limit_bytes)
    percent = round(100 * worst.memory_bytes / worst.memory_limit_bytes)
    return f"Replica {worst.replica} uses {percent}% of its memory limit.", {"replica": worst.replica}


def _window() -> Any:
    return utcnow() - timedelta(minutes=current_settings().alerts.window_minutes)


def hallucination_rule(deployment: Deployment) -> Finding:
    total, flagged = db.session.execute(
        select(
            func.count(Evaluation.id), func.coalesce(func.sum(case((Evaluation.hallucinated.is_(True), 1), else_=0)), 0)
        ).where(Evaluation.agent_id == deployment.agent_id, Evaluation.created_at >= _window())
    ).one()
    settings = current_settings().alerts
    if total < settings.min_samples or flagged / total < settings.hallucination_rate:
        return None
    rate = round(flagged / total, 3)
    return f"Hallucination rate {rate:.0%} over the last {total} evaluations.", {"rate": rate, "total": int(total)}


def error_rate_rule(deployment: Deployment) -> Finding:
    total, failed = db.session.execute(
        select(
            func.count(Invocation.id), func.coalesce(func.sum(case((Invocation.ok.is_(False), 1), else_=0)), 0)
        ).where(Invocation.deployment_id == deployment.id, Invocation.created_at >= _window())
    ).one()
    settings = current_settings().alerts
    if total < settings.min_samples or failed / total < settings.error_rate:
        return None
    rate = round(failed / total, 3)
    return f"Error rate {rate:.0%} over the last {total} calls.", {"rate": rate, "total": int(total)}


def evaluate_state(deployment: Deployment, known: OpenAlerts) -> None:
    """The rules that read only the deployment's own rows (every reconcile pass; no query when all is well)."""
    observe(deployment, AlertKind.DEPLOYMENT_FAILED, failed_rule(deployment), known=known)
    observe(deployment, AlertKind.CRASH_LOOP, crash_loop_rule(deployment), known=known)
    observe(deployment, AlertKind.REPLICA_UNHEALTHY, unhealthy_rule(deployment), known=known)


def evaluate_telemetry(deployment: Deployment, known: OpenAlerts, *, oom_recently: bool) -> None:
    """The rules that aggregate samples, calls and evaluations (every sampling round)."""
    observe(deployment, AlertKind.MEMORY_HIGH, memory_rule(deployment, oom_recently=oom_recently), known=known)
    observe(deployment, AlertKind.HALLUCINATION_RATE_HIGH, hallucination_rule(deployment), known=known)
    observe(deployment, AlertKind.ERROR_RATE_HIGH, error_rate_rule(deployment), known=known)


def resolve_all(deployment_id: str) -> None:
    """A killed deployment's open alerts resolve with it (caller commits)."""
    now = utcnow()
    for alert in db.session.scalars(
        select(Alert).where(Alert.deployment_id == deployment_id, Alert.status.in_(ALERT_OPEN))
    ):
        alert.status, alert.resolved_at = AlertStatus.RESOLVED, now
        webhooks.enqueue(alert, WebhookEvent.ALERT_RESOLVED)


# -- what users do ---------------------------------------------------------------------------------


def _ordered(stmt: Any) -> Any:
    rank = case(*[(Alert.severity == name, value) for name, value in SEVERITY_RANK.items()], else_=9)
    return stmt.order_by(rank, Alert.last_seen_at.desc(), Alert.id)


def list_alerts(
    actor: Principal,
    *,
    skip: int,
    limit: int,
    status: str | None = None,
    severity: str | None = None,
    deployment_id: str | None = None,
) -> Page[Alert]:
    """The caller's alerts, most severe first, then most recent."""
    stmt = scope_to_owner(select(Alert), Alert.owner_id, actor)
    if status:
        stmt = stmt.where(Alert.status == status)
    if severity:
        stmt = stmt.where(Alert.severity == severity)
    if deployment_id:
        stmt = stmt.where(Alert.deployment_id == deployment_id)
    return paginate(_ordered(stmt), skip=skip, limit=limit)


def _get(actor: Principal, alert_id: str) -> Alert:
    alert = db.session.get(Alert, alert_id)
    if alert is None or (not actor.is_admin and alert.owner_id != actor.id):
        raise NotFound("Alert not found.")
    return alert


def acknowledge(actor: Principal, alert_id: str) -> Alert:
    """Mark an active alert as seen (it stays open until its condition clears)."""
    alert = _get(actor, alert_id)
    if alert.status == AlertStatus.ACTIVE:
        alert.status, alert.acknowledged_at = AlertStatus.ACKNOWLEDGED, utcnow()
        db.session.commit()
    return alert


def resolve(actor: Principal, alert_id: str) -> Alert:
    """Close an alert by hand; if its condition persists, a new one opens."""
    alert = _get(actor, alert_id)
    if alert.status != AlertStatus.RESOLVED:
        alert.status, alert.resolved_at = AlertStatus.RESOLVED, utcnow()
        webhooks.enqueue(alert, WebhookEvent.ALERT_RESOLVED)
        db.session.commit()
    return alert
