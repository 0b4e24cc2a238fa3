"""Alerts: one per (deployment, kind) while its condition lasts; repeats raise its count."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow


class AlertStatus(StrEnum):
    """`active` until acknowledged or resolved; `acknowledged` is still open."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertSeverity(StrEnum):
    """Most severe first: the order lists sort by."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class AlertKind(StrEnum):
    """The built-in rules' kinds (services.alerts)."""

    DEPLOYMENT_FAILED = "deployment_failed"
    CRASH_LOOP = "crash_loop"
    REPLICA_UNHEALTHY = "replica_unhealthy"
    MEMORY_HIGH = "memory_high"
    HALLUCINATION_RATE_HIGH = "hallucination_rate_high"
    ERROR_RATE_HIGH = "error_rate_high"
    ROLLOUT_FAILED = "rollout_failed"
    """A rolling update failed and the deployment went back to its previous release (open until resolved)."""


SEVERITY_RANK = {severity: rank for rank, severity in enumerate(AlertSeverity)}
ALERT_OPEN = (AlertStatus.ACTIVE, AlertStatus.ACKNOWLEDGED)


class Alert(db.Model):  # type: ignore[name-defined]
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_status_severity", "status", "severity"),
        Index("ix_alerts_deployment_id", "deployment_id"),
        # While an alert is open, it is the only one of its kind for its deployment.
        Index(
            "uq_alerts_open_deployment_kind",
            "deployment_id",
            "kind",
            unique=True,
            sqlite_where=text(f"status != '{AlertStatus.RESOLVED}'"),
            postgresql_where=text(f"status != '{AlertStatus.RESOLVED}'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    severity: Mapped[str] = mapped_column(String(16))
    """An `AlertSeverity`."""
    kind: Mapped[str] = mapped_column(String(40))
    """An `AlertKind`."""
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.ACTIVE)
    """An `AlertStatus`."""
    count: Mapped[int] = mapped_column(Integer, default=1)
    signature: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """What the last occurrence looked like: a different one raises `count`."""
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
