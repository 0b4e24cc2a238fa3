"""Webhooks: where a user wants alerts and deployment events sent, and the log of every delivery attempt."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow


class DeliveryStatus(StrEnum):
    """A webhook delivery: `pending` until it succeeds or its last attempt fails."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookEvent(StrEnum):
    """What a webhook delivery tells: an alert was raised or resolved, a release became active or failed, or a
    deployment failed."""

    ALERT_RAISED = "alert.raised"
    ALERT_RESOLVED = "alert.resolved"
    RELEASE_ACTIVATED = "release.activated"
    RELEASE_FAILED = "release.failed"
    DEPLOYMENT_FAILED = "deployment.failed"


ALERT_EVENTS: tuple[WebhookEvent, ...] = (WebhookEvent.ALERT_RAISED, WebhookEvent.ALERT_RESOLVED)
"""What a webhook registered without `events` subscribes to (and every webhook registered before there were
other events): the alerts, as it always did."""
ALERT_EVENTS_JSON = text("'" + json.dumps([str(event) for event in ALERT_EVENTS]) + "'")
"""The column's server default: the rows that were there before `events` keep getting their alerts."""


def default_events() -> list[str]:
    return [str(event) for event in ALERT_EVENTS]


class Webhook(db.Model):  # type: ignore[name-defined]
    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_owner_id", "owner_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    severities: Mapped[list[str]] = mapped_column(JSONType, default=list)
    """Empty: every severity."""
    kinds: Mapped[list[str]] = mapped_column(JSONType, default=list)
    """Empty: every kind."""
    events: Mapped[list[str]] = mapped_column(JSONType, default=default_events, server_default=ALERT_EVENTS_JSON)
    """The `WebhookEvent`s it gets (never empty); `severities` and `kinds` filter the alert events only."""
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(db.Model):  # type: ignore[name-defined]
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_webhook_id_created_at", "webhook_id", "created_at"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    """A `DeliveryStatus`."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
