"""`GET /v1/events`: every event the caller may see, across deployments, newest first.

Events are kept per deployment (`deployment_events`); the feed reads them through their deployment, which says
whose they are (a user sees the events of its own deployments, an admin everyone's) and of which agent. It pages
by keyset: `before=<event id>` continues after that event, so reading the next page of a feed of millions costs
what the first did, where `skip` would make the database walk past every skipped row. Newest first is
`(created_at, id)` descending, the order of the indexes it walks: `(created_at, id)` for the whole feed,
`(deployment_id, created_at)` for one deployment, `(event_type, created_at)` for one type.

`total` is the sum of the deployments' `events_total` counters when only the deployment, agent or owner narrow
the feed (one read of the deployments, whatever the number of events); a type or time filter counts the rows
that match.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, func, or_, select

from deploy_service.errors import NotFound
from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentEvent, Principal

_event = DeploymentEvent
_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])


def _scoped(stmt: _S, actor: Principal, *, deployment_id: str | None, agent_id: str | None) -> _S:
    """`stmt` (which joins `deployments`) narrowed to the caller's deployments, and to one deployment or agent."""
    if not actor.is_admin:
        stmt = stmt.where(Deployment.owner_id == actor.id)
    if deployment_id:
        stmt = stmt.where(Deployment.id == deployment_id)
    if agent_id:
        stmt = stmt.where(Deployment.agent_id == agent_id)
    return stmt


def list_feed(
    actor: Principal,
    *,
    skip: int,
    limit: int,
    before: str | None = None,
    event_type: str | None = None,
    deployment_id: str | None = None,
    agent_id: str | None = None,
    since: datetime | None = None,
) -> dict[str, Any]:
    """One page of the caller's feed: `{items, total, skip, limit, next_before}`.

    Args:
        before: an event id of the feed (the last of the page before): only older events follow.

    Raises:
        NotFound: `before` names no event the caller may see (another user's is as a missing one).
    """
    narrow = {"deployment_id": deployment_id, "agent_id": agent_id}
    filters = []
    if event_type:
        filters.append(_event.event_type == event_type)
    if since is not None:
        filters.append(_event.created_at >= since)
    joined = select(_event, Deployment.agent_id).join(Deployment, Deployment.id == _event.deployment_id)
    stmt = _scoped(joined, actor, **narrow).where(*filters)
    if before:
        cursor = db.session.execute(
            _scoped(
                select(_event.created_at, _event.id).join(Deployment, Deployment.id == _event.deployment_id),
                actor,
                deployment_id=None,
                agent_id=None,
            ).where(_event.id == before)
        ).one_or_none()
        if cursor is None:
            raise NotFound("No such event in your feed (the `before` cursor).", details={"before": ["No such event."]})
        at, event_id = cursor
        stmt = stmt.where(or_(_event.created_at < at, and_(_event.created_at == at, _event.id < event_id)))
    rows = db.session.execute(stmt.order_by(_event.created_at.desc(), _event.id.desc()).offset(skip).limit(limit)).all()
    if filters:
        counted = _scoped(
            select(func.count()).select_from(_event).join(Deployment, Deployment.id == _event.deployment_id),
            actor,
            **narrow,
        ).where(*filters)
    else:
        counted = _scoped(select(func.coalesce(func.sum(Deployment.events_total), 0)), actor, **narrow)
    total = int(db.session.scalar(counted) or 0)
    items = [_item(event, agent) for event, agent in rows]
    return {
        "items": items,
        "total": total,
        "skip": skip,
        "limit": limit,
        "next_before": items[-1]["id"] if len(items) == limit else None,
    }


def _item(event: DeploymentEvent, agent_id: str) -> dict[str, Any]:
    return {
        "id": event.id,
        "deployment_id": event.deployment_id,
        "agent_id": agent_id,
        "event_type": event.event_type,
        "status": event.status,
        "message": event.message,
        "data": event.data,
        "created_at": event.created_at,
    }
