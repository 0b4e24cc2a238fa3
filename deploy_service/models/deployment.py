"""Deployments, their replicas (instances), their events and their results.

A deployment row holds *desired* state (`desired_state`, `replicas_desired`, `generation`) written by
the API, and *observed* state (`status`, instances) written by the reconciler. `version` is an
optimistic lock: two writers that read the same version cannot both win.

The status values are `StrEnum`s defined here once: members are `str`s, so they are stored, compared
and written into bodies as the very strings the contract names (the columns stay `String`). Which
replica counts as running or ready is decided here too (`is_running`, `is_ready`), for the ORM's
instances and the raw read path's rows alike.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, ForeignKey, Index, Integer, String, Text, UniqueConstraint, and_, text
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow

if TYPE_CHECKING:
    from deploy_service.models.release import Release


class DeploymentStatus(StrEnum):
    """What a deployment is doing (observed state, written through `services.lifecycle.transition`)."""

    DEPLOYING = "deploying"
    RUNNING = "running"
    READY = "ready"
    STOPPED = "stopped"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    """A job whose every replica exited 0: terminal like `failed` (`ended_at` set, containers removed)."""
    KILLED = "killed"


class DesiredState(StrEnum):
    """What the user asked a deployment to be (desired state, written by the API's actions)."""

    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"


class InstanceStatus(StrEnum):
    """What the service records of one replica slot.

    The reconciler may also record an engine state it found a fresh container in (`created`,
    `restarting`...), which is none of these and is never running.
    """

    PENDING = "pending"
    RUNNING = "running"
    EXITED = "exited"
    STOPPED = "stopped"
    REMOVED = "removed"
    SUCCEEDED = "succeeded"
    """A job's replica that exited 0: done, never restarted; its `exit_code` is kept."""
    FAILED = "failed"
    """A replica whose exit ended the deployment (restart budget spent, `never`, or a job's timeout)."""


class LogSource(StrEnum):
    """Which log of a deployment to read: its replicas' output, or the stored build log."""

    RUNTIME = "runtime"
    BUILD = "build"


class LogStream(StrEnum):
    """Where a log line came from: a replica's stdout or stderr, or the image build."""

    STDOUT = "stdout"
    STDERR = "stderr"
    BUILD = "build"


SERVING = frozenset({DeploymentStatus.RUNNING, DeploymentStatus.READY})
"""Every desired replica runs: calls are served, uptime counts, scaling is allowed."""
WITHOUT_REPLICAS = frozenset({DeploymentStatus.STOPPED, DeploymentStatus.KILLED})
"""Its containers are gone by request: bodies show no instances and no desired replicas."""


# The plain string: a `str` compared with a StrEnum member goes through the member's Python-level `__eq__`
# (ten times slower), and these two run for every replica of every deployment a list page shows.
_RUNNING: str = InstanceStatus.RUNNING.value


def is_running(status: str, container_id: str | None) -> bool:
    """A replica is running when it has a container and the engine last said it runs."""
    return status == _RUNNING and bool(container_id)


def is_ready(status: str, container_id: str | None, healthy: bool | None) -> bool:
    """A replica is ready when it is running and healthy (its health check passes, or without one it
    stayed up through the start-up grace): what `replicas.ready` counts and `interact` sends calls to."""
    return bool(healthy) and status == _RUNNING and bool(container_id)


class Deployment(db.Model):  # type: ignore[name-defined]
    __tablename__ = "deployments"
    __table_args__ = (
        # The lists' order (`created_at DESC, id DESC`) read from the index, for an owner, an agent or an admin.
        Index("ix_deployments_agent_id_created_at_id", "agent_id", "created_at", "id"),
        Index("ix_deployments_owner_id_created_at_id", "owner_id", "created_at", "id"),
        Index("ix_deployments_created_at_id", "created_at", "id"),
        Index("ix_deployments_status", "status"),
        # At most one live (non-killed) deployment per agent, even under concurrent deploys.
        Index(
            "uq_deployments_live_agent",
            "agent_id",
            unique=True,
            sqlite_where=text(f"status != '{DeploymentStatus.KILLED}'"),
            postgresql_where=text(f"status != '{DeploymentStatus.KILLED}'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    """A `DeploymentStatus`."""
    desired_state: Mapped[str] = mapped_column(String(16), default=DesiredState.RUNNING)
    """A `DesiredState`."""
    replicas_desired: Mapped[int] = mapped_column(Integer, default=1)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped by a restart: replicas of an older generation are replaced one at a time. An automatic rollback
    sets it back to the generation that still serves."""
    latest_generation: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    """The highest generation ever rolled out (a rollback lowers `generation`, never this): a restart goes
    past it, so no generation is used twice (replica names include it: a failed replica the engine kept
    is never adopted by a later rollout)."""
    revision: Mapped[int] = mapped_column(Integer, default=1)
    """The agent's deploy counter: built images are tagged with it."""
    image: Mapped[str | None] = mapped_column(String(512))
    image_ready: Mapped[bool] = mapped_column(default=False)
    image_error: Mapped[str | None] = mapped_column(Text)
    """Why the image of the current rollout could not be prepared (the preparer's; the planner decides)."""
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    build_log: Mapped[str | None] = mapped_column(Text, deferred=True)
    """Up to BUILD_LOG_MAX_BYTES; deferred, so reading deployments never drags their build logs along."""
    progress_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the current rollout began (deploy or restart): the progress deadline counts from here."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
    events_total: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """How many events the deployment has: kept by `lifecycle.record_event` with an atomic SQL increment,
    so the events page's `total` is one read, not a count over a million rows. Not part of `version`."""

    instances: Mapped[list[Instance]] = relationship(
        back_populates="deployment",
        order_by="Instance.index",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    current_release: Mapped[Release | None] = relationship(
        primaryjoin="and_(Deployment.id == Release.deployment_id, Deployment.revision == Release.number)",
        viewonly=True,
        uselist=False,
        lazy="select",
    )
    """The release numbered `revision` (None before its first is added), read when asked for: what a single
    deployment's body shows of its `source`; the read path of `services.deployment_reads` joins it itself."""

    __mapper_args__ = {"version_id_col": version}

    def __repr__(self) -> str:
        return f"<Deployment {self.id} {self.status}>"


class Instance(db.Model):  # type: ignore[name-defined]
    """One replica slot of a deployment, as the reconciler last saw it."""

    __tablename__ = "deployment_instances"
    __table_args__ = (UniqueConstraint("deployment_id", "index"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    container_id: Mapped[str | None] = mapped_column(String(80))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default=InstanceStatus.PENDING)
    """An `InstanceStatus` (or an engine state, see there)."""
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    recent_restarts: Mapped[int] = mapped_column(Integer, default=0)
    """Restarts since the replica last stayed up for the stable period: drives backoff and the budget."""
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    healthy: Mapped[bool | None] = mapped_column()
    health_failures: Mapped[int] = mapped_column(Integer, default=0)
    next_restart_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    deployment: Mapped[Deployment] = relationship(back_populates="instances")

    @hybrid_property
    def running(self) -> bool:
        """See `is_running`; in a query, the same rule in SQL."""
        return is_running(self.status, self.container_id)

    @running.inplace.expression
    @classmethod
    def _running_expression(cls) -> ColumnElement[bool]:
        return and_(cls.status == InstanceStatus.RUNNING, cls.container_id.is_not(None))

    @property
    def ready(self) -> bool:
        """See `is_ready`."""
        return is_ready(self.status, self.container_id, self.healthy)


class DeploymentEvent(db.Model):  # type: ignore[name-defined]
    __tablename__ = "deployment_events"
    __table_args__ = (
        Index("ix_deployment_events_deployment_id_created_at", "deployment_id", "created_at"),
        # An events page filtered by type (the UI's filter) reads only its matches, newest first.
        Index("ix_deployment_events_deployment_id_event_type_created_at", "deployment_id", "event_type", "created_at"),
        # System-wide counts of one kind of event over a time window (restarts in the last 24 h).
        Index("ix_deployment_events_event_type_created_at", "event_type", "created_at"),
        # The event feed across deployments, newest first, paged by keyset on (created_at, id).
        Index("ix_deployment_events_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeploymentResult(db.Model):  # type: ignore[name-defined]
    __tablename__ = "deployment_results"
    __table_args__ = (Index("ix_deployment_results_deployment_id_created_at", "deployment_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    results: Mapped[Any] = mapped_column(JSONType)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
