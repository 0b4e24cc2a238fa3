"""The reconciler's heartbeat: when the leading reconciler last completed a pass, for readiness.

One row per reconciler name (today only `reconciler`), written by whichever process leads, so a web
worker that runs no reconciler of its own can still tell whether one is alive (`/health/ready`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import UTCDateTime, utcnow

RECONCILER = "reconciler"


class CheckStatus(StrEnum):
    """What a health check found: `ok`, `error`, or `skipped` (a check it depends on failed)."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


class ReconcilerHeartbeat(db.Model):  # type: ignore[name-defined]
    __tablename__ = "reconciler_heartbeat"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_pass_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    holder: Mapped[str] = mapped_column(String(255))
    """`host:pid` of the process that completed the pass."""
    last_pass_seconds: Mapped[float | None] = mapped_column(Float)
    """How long that pass took (null: not recorded yet)."""
