"""The last lines of replicas' containers, stored before the reconciler removed them.

One row per removed container: `LOG_KEEP_LINES_PER_REPLICA` lines at most, kept for `LOG_RETENTION_DAYS`.
The lines are one JSON list (`[timestamp or null, stream, line]` each, oldest first), read and written
whole: a container's lines are never queried one by one, and one row per container keeps a removal one
insert. They belong to the deployment (owner-scoped through it) and go with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow


class ReplicaLog(db.Model):  # type: ignore[name-defined]
    __tablename__ = "replica_logs"
    __table_args__ = (
        # A container removed twice (a removal retried) keeps one row: the later read replaces the earlier.
        UniqueConstraint("deployment_id", "container_id"),
        Index("ix_replica_logs_deployment_id_replica_stored_at", "deployment_id", "replica", "stored_at"),
        Index("ix_replica_logs_stored_at", "stored_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    replica: Mapped[int] = mapped_column(Integer)
    container_id: Mapped[str] = mapped_column(String(80))
    generation: Mapped[int] = mapped_column(Integer)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lines: Mapped[list[Any]] = mapped_column(JSONType, default=list, deferred=True)
    """`[[timestamp (ISO 8601) or null, stream, line], ...]`, oldest first; deferred: listing rows skips them."""
