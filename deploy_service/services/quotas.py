"""Per-user quotas: how many agents a user owns, and the replicas and memory their live deployments ask for.

The one rule, consulted by the agents and deployments services before they write: a request by a
non-admin that would take the owner's usage past a limit (`QUOTA_AGENTS`, `QUOTA_REPLICAS`,
`QUOTA_MEMORY_MB`) is refused with 403 `quota_exceeded`, `details: {quota, limit, used}`, where `quota` is
`agents`, `replicas` or `memory_mb` (the variable's name without `QUOTA_`, in lower case) and `used` is
what the owner holds now. Admins are exempt (their requests are never refused; what they create for a
user still counts towards that user's usage). A change that grows nothing (scaling down, a restart that
keeps or lowers memory) is never refused, so lowering a limit never traps what already runs.

Live deployments are the non-killed ones (as everywhere in the service): a stopped or failed deployment
keeps its share until it is deleted, so starting it again never needs room.

Races: usage is read inside the request's own transaction, after `_lock_owner` has written the owner's
`users` row (an UPDATE that changes nothing). On PostgreSQL that is a row lock held until the commit or
rollback, and each later statement (READ COMMITTED) sees what the holder before committed; on SQLite it
is the database's write lock, taken by the transaction's first write. Either way two requests of one
user are decided one after the other, so two concurrent deploys (or agent creations) cannot both take
the last slot: the second counts the first's row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from deploy_service.errors import QuotaExceeded
from deploy_service.extensions import db
from deploy_service.models import Agent, Deployment, DeploymentStatus, Principal, User
from deploy_service.settings import current_settings

__all__ = ["AGENTS", "MEMORY_MB", "REPLICAS", "check_deployment", "check_new_agent", "memory_per_replica"]

AGENTS = "agents"
REPLICAS = "replicas"
MEMORY_MB = "memory_mb"

_users = User.__table__
_MEMORY = Deployment.config[("resources", "memory_mb")].as_integer()


def memory_per_replica(config: dict[str, Any]) -> int:
    """The memory (MB) one replica of a deployment with this resolved config is given."""
    resources = config.get("resources") or {}
    return int(resources.get("memory_mb") or current_settings().agents.default_memory_mb)


def _refuse(quota: str, limit: int, used: int) -> QuotaExceeded:
    """The refusal; the transaction (and with it the owner's lock) ends here, nothing written."""
    db.session.rollback()
    return QuotaExceeded(
        f"This would exceed your {quota} quota ({used} used of {limit}).",
        details={"quota": quota, "limit": limit, "used": used},
    )


def _lock_owner(owner_id: str) -> None:
    """Serialise the quota decisions of one user until this transaction ends (see the module docstring)."""
    db.session.execute(update(_users).where(_users.c.id == owner_id).values(updated_at=_users.c.updated_at))


def check_new_agent(actor: Principal, owner_id: str) -> None:
    """Room for one more agent of `owner_id`.

    Raises:
        QuotaExceeded: `agents`, unless `actor` is an admin.
    """
    if actor.is_admin:
        return
    limit = current_settings().quotas.agents
    _lock_owner(owner_id)
    used = db.session.scalar(select(func.count()).select_from(Agent).where(Agent.owner_id == owner_id)) or 0
    if used + 1 > limit:
        raise _refuse(AGENTS, limit, used)


def _live_usage(owner_id: str) -> tuple[int, int]:
    """(replicas, memory MB) the owner's live deployments ask for, as committed (and locked) now."""
    default = current_settings().agents.default_memory_mb
    replicas, memory = db.session.execute(
        select(
            func.coalesce(func.sum(Deployment.replicas_desired), 0),
            func.coalesce(func.sum(Deployment.replicas_desired * func.coalesce(_MEMORY, default)), 0),
        ).where(Deployment.owner_id == owner_id, Deployment.status != DeploymentStatus.KILLED)
    ).one()
    return int(replicas), int(memory)


def check_deployment(
    actor: Principal,
    owner_id: str,
    *,
    replicas: int,
    config: dict[str, Any],
    replacing: Deployment | None = None,
) -> None:
    """Room for a live deployment of `owner_id` with `replicas` replicas of the resolved `config`.

    Call it before changing anything in the session (its reads must not flush the change).

    Args:
        replacing: the deployment as it is before the change (a scale or a restart), whose share is
            given back; None for a new deployment.

    Raises:
        QuotaExceeded: `replicas` or `memory_mb` (checked in that order), unless `actor` is an admin or
            nothing grows.
    """
    if actor.is_admin:
        return
    memory = replicas * memory_per_replica(config)
    before_replicas = before_memory = 0
    if replacing is not None:
        before_replicas = replacing.replicas_desired
        before_memory = before_replicas * memory_per_replica(replacing.config or {})
        if replicas <= before_replicas and memory <= before_memory:
            return
    quotas = current_settings().quotas
    _lock_owner(owner_id)
    used_replicas, used_memory = _live_usage(owner_id)
    if replicas > before_replicas and used_replicas - before_replicas + replicas > quotas.replicas:
        raise _refuse(REPLICAS, quotas.replicas, used_replicas)
    if memory > before_memory and used_memory - before_memory + memory > quotas.memory_mb:
        raise _refuse(MEMORY_MB, quotas.memory_mb, used_memory)
