"""Evaluations: per-response telemetry an agent reports about itself (AgentOps-style scores)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import UTCDateTime, new_id, utcnow


class Evaluation(db.Model):  # type: ignore[name-defined]
    __tablename__ = "evaluations"
    __table_args__ = (
        # Listing and stats filter by agent and time; the created_at index serves an admin's global view.
        Index("ix_evaluations_agent_id_created_at", "agent_id", "created_at"),
        Index("ix_evaluations_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    deployment_id: Mapped[str | None] = mapped_column(ForeignKey("deployments.id", ondelete="SET NULL"))
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    semantic_drift: Mapped[float | None] = mapped_column(Float)
    uncertainty: Mapped[float | None] = mapped_column(Float)
    factual_support: Mapped[float | None] = mapped_column(Float)
    hallucination_probability: Mapped[float | None] = mapped_column(Float)
    hallucinated: Mapped[bool] = mapped_column(default=False)
    latency_sec: Mapped[float | None] = mapped_column(Float)
    throughput_qps: Mapped[float | None] = mapped_column(Float)
    mode: Mapped[str | None] = mapped_column(String(50))
    model_name: Mapped[str | None] = mapped_column(String(200))
    agent_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
