"""Per-agent figures: invocations through `interact` (count, errors, p50/p95), uptime, restarts, evaluations."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select

from deploy_service.extensions import db
from deploy_service.models import SERVING, Evaluation, Invocation, Principal
from deploy_service.models.types import utcnow
from deploy_service.services.agents import get_agent
from deploy_service.services.deployments import live_deployment
from deploy_service.services.evaluations import aggregate


def _percentile(where: list[Any], count: int, fraction: float) -> float | None:
    """The nearest-rank percentile of invocation latency, by one ordered, offset query (both databases)."""
    if not count:
        return None
    offset = max(math.ceil(fraction * count) - 1, 0)
    value = db.session.scalar(
        select(Invocation.latency_ms).where(*where).order_by(Invocation.latency_ms).offset(offset).limit(1)
    )
    return None if value is None else round(float(value), 3)


def invocation_stats(scope: Any, since: datetime) -> dict[str, Any]:
    """`{count, errors, p50_ms, p95_ms}` of the invocations matching `scope` since `since`."""
    where = [scope, Invocation.created_at >= since]
    failed = func.coalesce(func.sum(case((Invocation.ok.is_(False), 1), else_=0)), 0)
    count, errors = db.session.execute(select(func.count(Invocation.id), failed).where(*where)).one()
    count = int(count)
    return {
        "count": count,
        "errors": int(errors),
        "p50_ms": _percentile(where, count, 0.50),
        "p95_ms": _percentile(where, count, 0.95),
    }


def agent_stats(actor: Principal, agent_id: str, *, hours: int = 24) -> dict[str, Any]:
    """`GET /v1/agents/<id>/stats` over the last `hours` hours."""
    agent = get_agent(actor, agent_id)
    now = utcnow()
    since = now - timedelta(hours=hours)
    deployment = live_deployment(agent.id)
    uptime = 0.0
    restarts = 0
    if deployment is not None:
        restarts = sum(instance.restarts for instance in deployment.instances)
        if deployment.status in SERVING and deployment.started_at is not None:
            uptime = round((now - deployment.started_at).total_seconds(), 3)
    return {
        "agent_id": agent.id,
        "window_hours": hours,
        "deployment_id": deployment.id if deployment else None,
        "deployment_status": deployment.status if deployment else None,
        "uptime_seconds": uptime,
        "restarts": restarts,
        "invocations": invocation_stats(Invocation.agent_id == agent.id, since),
        "evaluations": aggregate(Evaluation.agent_id == agent.id, since),
    }
