"""Resource samples of running replicas, taken by the reconciler and kept for a retention period."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import UTCDateTime, utcnow


class ContainerSample(db.Model):  # type: ignore[name-defined]
    __tablename__ = "container_samples"
    __table_args__ = (
        Index("ix_container_samples_deployment_id_container_id", "deployment_id", "container_id"),
        Index("ix_container_samples_sampled_at", "sampled_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    replica: Mapped[int] = mapped_column(Integer)
    container_id: Mapped[str] = mapped_column(String(80))
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    """Percent of one core since the previous sample of the same container (None for the first)."""
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    memory_limit_bytes: Mapped[int] = mapped_column(BigInteger)
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
