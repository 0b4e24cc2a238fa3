"""Alerts: one per (deployment, kind) while its condition lasts; repeats raise its count."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
ALERT_OPEN = ("active", "acknowledged")


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
            sqlite_where=text("status != 'resolved'"),
            postgresql_where=text("status != 'resolved'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    severity: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="active")
    count: Mapped[int] = mapped_column(Integer, default=1)
    signature: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """What the last occurrence looked like: a different one raises `count`."""
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
