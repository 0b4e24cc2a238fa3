"""Agents: what their owners registered to run (an image, or a git source to build)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow


class AgentStatus(StrEnum):
    """Follows its deployment (`services.lifecycle.AGENT_STATUS_FOR`)."""

    IDLE = "idle"
    """Never deployed."""
    DEPLOYED = "deployed"
    """Has a live deployment."""
    STOPPED = "stopped"


class AgentKind(StrEnum):
    """What an agent's replicas are for."""

    SERVICE = "service"
    """Runs until stopped, serves `interact` (what every agent was before jobs)."""
    JOB = "job"
    """Runs to completion (a build, a batch run): an exit 0 of every replica is the deployment's success."""


class RestartPolicy(StrEnum):
    """What the reconciler does when a replica exits (`restart_policy_applies` decides per exit)."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


DEFAULT_RESTART_POLICY: dict[str, RestartPolicy] = {
    AgentKind.SERVICE: RestartPolicy.ALWAYS,
    AgentKind.JOB: RestartPolicy.ON_FAILURE,
}


class Agent(db.Model):  # type: ignore[name-defined]
    __tablename__ = "agents"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        # The lists' order, `created_at DESC, id DESC`, read from an index (services/agent_reads.py).
        Index("ix_agents_owner_id_created_at_id", "owner_id", "created_at", "id"),
        Index("ix_agents_created_at_id", "created_at", "id"),
        Index("ix_agents_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    port: Mapped[int] = mapped_column(default=8080)
    invoke_path: Mapped[str] = mapped_column(String(512), default="/invoke")
    command: Mapped[list[str] | None] = mapped_column(JSONType)
    env: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    secrets: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    health_check: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    resources: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    read_only_rootfs: Mapped[bool] = mapped_column(default=True)
    run_as_user: Mapped[str | None] = mapped_column(String(21))
    """`uid[:gid]` the replicas run as, over the image's user; None: the runner's rule (never uid 0)."""
    registry_auth: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """`{username, password_secret, registry}`: a login for a private registry, the password by secret name only."""
    kind: Mapped[str] = mapped_column(String(16), default=AgentKind.SERVICE, server_default=text("'service'"))
    """An `AgentKind`."""
    restart_policy: Mapped[str] = mapped_column(
        String(16), default=RestartPolicy.ALWAYS, server_default=text("'always'")
    )
    """A `RestartPolicy`; the kind's default (`DEFAULT_RESTART_POLICY`) unless the owner chose one."""
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    """Jobs only: the longest a run may take, from its deploy or restart; None: no limit."""
    status: Mapped[str] = mapped_column(String(16), default=AgentStatus.IDLE)
    """An `AgentStatus`."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Agent {self.id} {self.name!r}>"
