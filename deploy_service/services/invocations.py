"""The record of every call made through `interact`: writing one, listing an agent's, and retention.

`interact` (JSON and streamed) hands a finished `CallRecord` to `record`, which never raises: the
agent's answer has reached the caller (or is on its way), and a record that cannot be written is
logged rather than turned into an error. The list is owner-scoped like the agent it belongs to, and
never holds a body. `prune` is the reconciler's `PruneInvocationsJob`'s one statement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from deploy_service.extensions import db
from deploy_service.models import Invocation, InvocationStatus, Principal
from deploy_service.models.types import utcnow
from deploy_service.services.agents import get_agent
from deploy_service.services.common import Page, paginate

log = logging.getLogger(__name__)

ERROR_MAX = 500
"""The longest `error` stored (the column's size)."""


@dataclass(frozen=True)
class CallRecord:
    """What one call through `interact` did, as the invocations list shows it."""

    agent_id: str
    deployment_id: str
    replica: int | None
    status_code: int
    latency_ms: float
    session_id: str | None = None
    streamed: bool = False
    first_byte_ms: float | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    error: str | None = None
    """`kind: message` of the service's error the caller got instead of the agent's answer."""


def record(call: CallRecord) -> None:
    """Store the call (its own commit); never raises: a call that could not be recorded is logged."""
    try:
        db.session.add(
            Invocation(
                agent_id=call.agent_id,
                deployment_id=call.deployment_id,
                replica=call.replica,
                status_code=call.status_code,
                ok=call.status_code < 500,
                latency_ms=round(call.latency_ms, 3),
                session_id=call.session_id,
                streamed=call.streamed,
                first_byte_ms=None if call.first_byte_ms is None else round(call.first_byte_ms, 3),
                request_bytes=call.request_bytes,
                response_bytes=call.response_bytes,
                error=None if call.error is None else call.error[:ERROR_MAX],
            )
        )
        db.session.commit()
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning(
            "a call to agent %s (deployment %s, replica %s) answered %s but was not recorded (%s)",
            call.agent_id,
            call.deployment_id,
            call.replica,
            call.status_code,
            type(exc).__name__,
        )


def list_invocations(
    actor: Principal,
    agent_id: str,
    *,
    skip: int,
    limit: int,
    status: InvocationStatus | None = None,
    since: datetime | None = None,
) -> Page[Invocation]:
    """The agent's recorded calls, newest first.

    Args:
        status: `ok` (a status below 500) or `error` (500 and above: what the error rate counts).
        since: only calls made at or after this time.

    Raises:
        NotFound: no such agent, or not the actor's.
    """
    agent = get_agent(actor, agent_id)
    stmt = select(Invocation).where(Invocation.agent_id == agent.id)
    if status is not None:
        stmt = stmt.where(Invocation.ok.is_(status == InvocationStatus.OK))
    if since is not None:
        stmt = stmt.where(Invocation.created_at >= since)
    return paginate(stmt.order_by(Invocation.created_at.desc(), Invocation.id.desc()), skip=skip, limit=limit)


def prune(*, retention_days: float) -> int:
    """Delete the records of calls made more than `retention_days` ago; how many went. No commit."""
    cutoff = utcnow() - timedelta(days=retention_days)
    result = db.session.execute(delete(Invocation).where(Invocation.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
