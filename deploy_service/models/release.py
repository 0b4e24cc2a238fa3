"""Releases: every rollout of a deployment is a numbered, immutable snapshot of what it runs.

A release records what a deployment was asked to run (its image reference, the git source it was
built from, the resolved runtime config with secrets by name only) and how its rollout went
(`status`, `activated_at`, `ended_at`, `error`). The deployment's `revision` is the number of its
current release, the newest one: a read of a deployment never joins this table. Which release status
follows which deployment status is decided in `services.lifecycle` (the one state machine).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow


class ReleaseStatus(StrEnum):
    """How a release's rollout went."""

    PENDING = "pending"
    """Rolling out: created, its replicas not all ready yet."""
    ACTIVE = "active"
    """What the deployment runs (or runs again when it is started): the last release that became ready."""
    SUPERSEDED = "superseded"
    """Was active; a later release (a deploy or restart) replaced it."""
    FAILED = "failed"
    """Its rollout failed, or the deployment was stopped or deleted before it was ready (`error` says which)."""
    ROLLED_BACK = "rolled_back"
    """Was active; a rollback to an earlier release replaced it."""


class ReleaseReason(StrEnum):
    """Why a release was made."""

    DEPLOY = "deploy"
    RESTART = "restart"
    ROLLBACK = "rollback"


class Release(db.Model):  # type: ignore[name-defined]
    __tablename__ = "deployment_releases"
    __table_args__ = (UniqueConstraint("deployment_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    """1, 2, 3... per deployment."""
    status: Mapped[str] = mapped_column(String(16))
    """A `ReleaseStatus`."""
    reason: Mapped[str] = mapped_column(String(16))
    """A `ReleaseReason`."""
    image: Mapped[str | None] = mapped_column(String(512))
    """The image reference its replicas run (for a git source, the tag this service builds)."""
    image_id: Mapped[str | None] = mapped_column(String(80))
    """The engine's image id (`sha256:...`), recorded at the release's first start."""
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """`{git_url, branch, commit}` for an agent built from git (commit null until a build records it)."""
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """The resolved runtime config, as the deployment carries it (secrets by name only)."""
    rollback_of: Mapped[int | None] = mapped_column(Integer)
    """For a rollback: the number of the release it went back to."""
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"<Release {self.deployment_id} #{self.number} {self.status}>"
