"""`GET /v1/deployments/metrics`: how the whole system is doing, over what the caller may see.

Every figure is an SQL aggregate (counts, sums, an average, one ordered-offset percentile), so the
cost does not grow with what Python has to load. Deploy time is `started_at - created_at` (the time to
`running`), over deployments created in the last 24 hours.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import case, distinct, extract, func, select
from sqlalchemy.sql.elements import ColumnElement

from deploy_service.extensions import db
from deploy_service.models import (
    SERVING,
    Agent,
    Alert,
    AlertSeverity,
    AlertStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Instance,
    Invocation,
    Principal,
)
from deploy_service.models.types import utcnow

DAY = timedelta(hours=24)


def deploy_seconds_expression() -> ColumnElement[Any]:
    """Seconds from creation to `running`, in the database's own date arithmetic."""
    if db.engine.dialect.name == "sqlite":
        return (func.julianday(Deployment.started_at) - func.julianday(Deployment.created_at)) * 86400.0
    return extract("epoch", Deployment.started_at - Deployment.created_at)


def _scoped(stmt: Any, actor: Principal | None) -> Any:
    """Everything for an admin (or no actor: the Prometheus scrape), else the actor's deployments."""
    return stmt if actor is None or actor.is_admin else stmt.where(Deployment.owner_id == actor.id)


def deployments_by_status(actor: Principal | None = None) -> dict[str, int]:
    """Deployment counts for every status (zeros included)."""
    counts = select(Deployment.status, func.count()).group_by(Deployment.status)
    found = {status: count for status, count in db.session.execute(_scoped(counts, actor))}
    return {status.value: found.get(status, 0) for status in DeploymentStatus}


def running_replicas(actor: Principal | None = None) -> int:
    """Replicas of live deployments with a running container."""
    stmt = (
        select(func.count(Instance.id))
        .join(Deployment, Deployment.id == Instance.deployment_id)
        .where(Deployment.status != DeploymentStatus.KILLED, Instance.running)
    )
    return db.session.scalar(_scoped(stmt, actor)) or 0


def active_alerts_by_severity(actor: Principal | None = None) -> dict[str, int]:
    """Active alert counts for every severity (zeros included)."""
    counts = select(Alert.severity, func.count()).where(Alert.status == AlertStatus.ACTIVE).group_by(Alert.severity)
    if actor is not None and not actor.is_admin:
        counts = counts.where(Alert.owner_id == actor.id)
    found = {severity: count for severity, count in db.session.execute(counts)}
    return {severity.value: found.get(severity, 0) for severity in AlertSeverity}


def system_metrics(actor: Principal) -> dict[str, Any]:
    now = utcnow()
    since = now - DAY
    live = Deployment.status != DeploymentStatus.KILLED

    by_status = deployments_by_status(actor)
    agents = select(func.count()).select_from(Agent)
    total_agents = db.session.scalar(agents if actor.is_admin else agents.where(Agent.owner_id == actor.id)) or 0
    deployed_agents = (
        db.session.scalar(_scoped(select(func.count(distinct(Deployment.agent_id))).where(live), actor)) or 0
    )

    recent = [Deployment.created_at >= since, Deployment.status != DeploymentStatus.DEPLOYING]
    succeeded, finished = db.session.execute(
        _scoped(
            select(
                func.coalesce(func.sum(case((Deployment.started_at.is_not(None), 1), else_=0)), 0), func.count()
            ).where(*recent),
            actor,
        )
    ).one()
    seconds = deploy_seconds_expression()
    timed = [Deployment.created_at >= since, Deployment.started_at.is_not(None)]
    count, average = db.session.execute(_scoped(select(func.count(), func.avg(seconds)).where(*timed), actor)).one()
    p95 = None
    if count:
        p95 = db.session.scalar(
            _scoped(select(seconds).where(*timed), actor).order_by(seconds).offset(math.ceil(0.95 * count) - 1).limit(1)
        )

    restarts = db.session.scalar(
        _scoped(
            select(func.count(DeploymentEvent.id))
            .join(Deployment, Deployment.id == DeploymentEvent.deployment_id)
            .where(DeploymentEvent.event_type == "container_restarted", DeploymentEvent.created_at >= since),
            actor,
        )
    )
    calls = select(
        func.count(Invocation.id), func.coalesce(func.sum(case((Invocation.ok.is_(False), 1), else_=0)), 0)
    ).where(Invocation.created_at >= since)
    if not actor.is_admin:
        calls = calls.where(Invocation.agent_id.in_(select(Agent.id).where(Agent.owner_id == actor.id)))
    invocations, errors = db.session.execute(calls).one()

    return {
        "total_deployments": sum(by_status.values()),
        "by_status": by_status,
        "active_deployments": sum(by_status[status] for status in (DeploymentStatus.DEPLOYING, *SERVING)),
        "total_agents": total_agents,
        "deployed_agents": deployed_agents,
        "replicas_running": running_replicas(actor),
        "deploy_success_rate_24h": round(succeeded / finished, 4) if finished else None,
        "avg_deploy_seconds": round(float(average), 3) if average is not None else None,
        "p95_deploy_seconds": round(float(p95), 3) if p95 is not None else None,
        "restarts_24h": restarts or 0,
        "active_alerts": active_alerts_by_severity(actor),
        "invocations_24h": int(invocations),
        "error_rate_24h": round(int(errors) / int(invocations), 4) if invocations else 0.0,
    }
