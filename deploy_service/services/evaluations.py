"""Evaluations: agents report per-response scores; owners list them and read aggregate stats.

Stats are single SQL aggregate queries over the `(agent_id, created_at)` index, so they stay fast at
millions of rows; rates are fractions in [0, 1], latency is in seconds.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, case, func, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from deploy_service.errors import NotFound
from deploy_service.extensions import db
from deploy_service.models import Agent, AlertKind, ApiKey, Deployment, DeploymentStatus, Evaluation, Principal
from deploy_service.models.types import new_id, utcnow
from deploy_service.services import alerts
from deploy_service.services.agents import agent_for_caller, get_agent
from deploy_service.services.common import Page, paginate
from deploy_service.settings import current_settings

log = logging.getLogger(__name__)


_EVALUATIONS = Evaluation.__table__
_COLUMNS = tuple(column.name for column in _EVALUATIONS.columns)
_INSERT = (
    insert(_EVALUATIONS)
    .values(
        deployment_id=select(Deployment.id)
        .where(Deployment.agent_id == bindparam("live_of"), Deployment.status != DeploymentStatus.KILLED)
        .limit(1)
        .scalar_subquery()
    )
    .returning(_EVALUATIONS.c.deployment_id)
)
"""One statement for every post (its parameters are the row, and `live_of` the agent whose live deployment it
is filed under, found by the statement itself): compiled once, not a `values()` per call."""


def record(caller: Principal | ApiKey, data: dict[str, Any]) -> dict[str, Any]:
    """Store one evaluation for the caller's agent (the key's, or `agent_id` of the owner's); returns its row
    as `EvaluationSchema` shows it (every column, in the table's order).

    The write agents make on every answer, so it is one insert and a commit: a key names its agent (the key
    row exists only while the agent does: it is deleted with it), and the live deployment it is filed under is
    found by the insert itself (a subquery; `RETURNING` hands its id back). An agent deleted in between is the
    same 404 as one never there.

    Raises:
        NotFound: no such agent visible to the caller, or a key used for another agent.
    """
    wanted = data.pop("agent_id", None)
    if isinstance(caller, ApiKey) and wanted in (None, caller.agent_id):
        agent_id = caller.agent_id
    else:
        agent_id = agent_for_caller(caller, wanted).id
    if "hallucinated" not in data:
        probability = data.get("hallucination_probability")
        data["hallucinated"] = probability is not None and probability >= 0.5
    row = dict.fromkeys(_COLUMNS)
    del row["deployment_id"]  # the statement's own
    row.update(data, id=new_id(), agent_id=agent_id, created_at=utcnow())
    try:
        deployment_id = db.session.execute(_INSERT, {**row, "live_of": agent_id}).scalar_one()
        db.session.commit()
    except IntegrityError as exc:  # the agent (with its keys) was deleted since it was read
        db.session.rollback()
        raise NotFound("Agent not found.") from exc
    row = {column: deployment_id if column == "deployment_id" else row[column] for column in _COLUMNS}
    # The hallucination rule runs on the event, not only on the next sampling round: at most every
    # ALERT_EVENT_RULE_SECONDS per deployment (it counts the whole window).
    interval = current_settings().alerts.event_rule_seconds
    if deployment_id is not None and alerts.event_rules.due(deployment_id, interval):
        _run_hallucination_rule(deployment_id)
    return row


def _run_hallucination_rule(deployment_id: str) -> None:
    """Open, repeat or resolve the deployment's hallucination alert; never raises (the evaluation is stored).

    Two posts at the same moment can both find no open alert and both open one: the later insert meets
    the open-alert unique index. Looked at again, the rival's alert is there, and this observation
    repeats it. Any other database failure is logged: the reconciler's next sampling round runs the
    rule again.
    """
    for attempt in (1, 2):
        try:
            deployment = db.session.get(Deployment, deployment_id)
            if deployment is not None:
                alerts.observe(deployment, AlertKind.HALLUCINATION_RATE_HIGH, alerts.hallucination_rule(deployment))
            db.session.commit()
            return
        except SQLAlchemyError as exc:
            db.session.rollback()
            if isinstance(exc, IntegrityError) and attempt == 1:
                continue
            log.warning(
                "the hallucination alert of deployment %s was not updated (%s); the next sampling round runs "
                "the rule again",
                deployment_id,
                type(exc).__name__,
            )
            return


def _scoped(stmt: Select[Any], actor: Principal | ApiKey, agent_id: str | None) -> Select[Any]:
    if isinstance(actor, ApiKey):  # an agent's key reads its own agent's evaluations, whatever it names
        return stmt.where(Evaluation.agent_id == agent_for_caller(actor, agent_id).id)
    if agent_id:
        agent = get_agent(actor, agent_id)
        return stmt.where(Evaluation.agent_id == agent.id)
    if actor.is_admin:
        return stmt
    return stmt.where(Evaluation.agent_id.in_(select(Agent.id).where(Agent.owner_id == actor.id)))


def list_evaluations(
    actor: Principal | ApiKey,
    *,
    skip: int,
    limit: int,
    agent_id: str | None = None,
    hallucinated: bool | None = None,
    since: datetime | None = None,
) -> Page[Evaluation]:
    """Evaluations of the caller's agents, newest first."""
    stmt = _scoped(select(Evaluation), actor, agent_id)
    if hallucinated is not None:
        stmt = stmt.where(Evaluation.hallucinated == hallucinated)
    if since is not None:
        stmt = stmt.where(Evaluation.created_at >= since)
    return paginate(stmt.order_by(Evaluation.created_at.desc(), Evaluation.id.desc()), skip=skip, limit=limit)


def _round(value: Any, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def aggregate(stmt_filter: Any, since: datetime) -> dict[str, Any]:
    """The contract's stats over evaluations matching `stmt_filter` since `since`, in one query."""
    row = db.session.execute(
        select(
            func.count(Evaluation.id),
            func.coalesce(func.sum(case((Evaluation.hallucinated.is_(True), 1), else_=0)), 0),
            func.avg(Evaluation.latency_sec),
            func.avg(Evaluation.throughput_qps),
            func.avg(Evaluation.semantic_drift),
            func.avg(Evaluation.uncertainty),
            func.avg(Evaluation.factual_support),
        ).where(stmt_filter, Evaluation.created_at >= since)
    ).one()
    total, hallucinations = int(row[0]), int(row[1])
    return {
        "total_evaluations": total,
        "total_hallucinations": hallucinations,
        "hallucination_rate": round(hallucinations / total, 6) if total else 0.0,
        "avg_latency": _round(row[2]),
        "avg_throughput": _round(row[3]),
        "avg_semantic_drift": _round(row[4]),
        "avg_uncertainty": _round(row[5]),
        "avg_factual_support": _round(row[6]),
    }


def stats(actor: Principal | ApiKey, *, days: int = 7, agent_id: str | None = None) -> dict[str, Any]:
    """`GET /v1/evaluations/stats` over the last `days` days (an agent's key: of its own agent only)."""
    since = utcnow() - timedelta(days=days)
    if isinstance(actor, ApiKey):
        scope: Any = Evaluation.agent_id == agent_for_caller(actor, agent_id).id
    elif agent_id:
        scope = Evaluation.agent_id == get_agent(actor, agent_id).id
    elif actor.is_admin:
        scope = True
    else:
        scope = Evaluation.agent_id.in_(select(Agent.id).where(Agent.owner_id == actor.id))
    return aggregate(scope, since)
