"""Open `follow=true` log streams, one row each, so every worker counts a user's streams the same way.

gunicorn runs several processes, and a stream lives in one of them for up to `LOG_FOLLOW_MAX_SECONDS`:
the limit of `LOG_FOLLOW_MAX_PER_USER` streams per user can only be kept in a place they all share.
The rate limiter's storage is per process by default (`memory://`), so that place is the database.
A stream deletes its row when it ends; a worker killed mid-stream cannot, so a row counts only until
`expires_at`, which the stream keeps moving ahead while it runs (a lease of `LOG_FOLLOW_LEASE_SECONDS`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import UTCDateTime, new_id, utcnow


class FollowSlot(db.Model):  # type: ignore[name-defined]
    """One open followed log stream of a user."""

    __tablename__ = "log_follow_slots"
    __table_args__ = (Index("ix_log_follow_slots_user_id_expires_at", "user_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(String(36))
    """The deployment followed (for whoever looks at the table; no foreign key: it outlives nothing)."""
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When the stream ends at the latest (`LOG_FOLLOW_MAX_SECONDS` after it opened)."""
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """Until when the row counts unless renewed (never past `ends_at`)."""
