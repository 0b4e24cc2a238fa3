"""Queueing webhook deliveries: which of an owner's webhooks get an event, and the body they are sent.

Called inside the transaction of the change an event tells (an alert raised or resolved, by `alerts`; a
release activated or failed and a deployment failed, by `lifecycle`), so a delivery is queued if and only if
that change commits. The reconciler's dispatcher sends them later, signed and retried (`webhooks.deliver`).

It imports models only: `lifecycle` queues through it, and `webhooks` (which uses `lifecycle`) builds on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import Alert, Deployment, Release, Webhook, WebhookDelivery, WebhookEvent
from deploy_service.models.types import utcnow


def queue(owner_id: str, event: WebhookEvent, data: dict[str, Any], *, wants: Callable[[Webhook], bool]) -> int:
    """Add a pending delivery of `event` to each of the owner's webhooks subscribed to it that `wants` it
    (the caller commits); returns how many.

    Read without autoflush: a concurrent change of what the caller holds must surface at its commit (409),
    not here.
    """
    with db.session.no_autoflush:
        hooks = db.session.scalars(select(Webhook).where(Webhook.owner_id == owner_id)).all()
    now = utcnow()
    payload = {"type": str(event), "timestamp": now.isoformat(), "data": data}
    queued = 0
    for hook in hooks:
        if event not in hook.events or not wants(hook):
            continue
        db.session.add(WebhookDelivery(webhook_id=hook.id, event=event, payload=payload, next_attempt_at=now))
        queued += 1
    return queued


def alert_event(alert: Alert, event: WebhookEvent) -> int:
    """Queue `event` about `alert` to the owner's webhooks whose `severities` and `kinds` take it."""
    data = {
        "id": alert.id,
        "deployment_id": alert.deployment_id,
        "agent_id": alert.agent_id,
        "severity": alert.severity,
        "kind": alert.kind,
        "message": alert.message,
        "status": alert.status,
        "count": alert.count,
    }

    def wants(hook: Webhook) -> bool:
        return (not hook.severities or alert.severity in hook.severities) and (
            not hook.kinds or alert.kind in hook.kinds
        )

    return queue(alert.owner_id, event, data, wants=wants)


def release_data(release: Release) -> dict[str, Any]:
    """What a deployment event says of a release."""
    return {
        "number": release.number,
        "status": release.status,
        "reason": release.reason,
        "rollback_of": release.rollback_of,
        "error": release.error,
    }


def deployment_event(deployment: Deployment, event: WebhookEvent, *, release: Release | None) -> int:
    """Queue a release or deployment event to the deployment owner's webhooks subscribed to it (`severities`
    and `kinds` are alert filters: they do not apply)."""
    data = {
        "deployment_id": deployment.id,
        "agent_id": deployment.agent_id,
        "deployment_status": deployment.status,
        "error": deployment.error,
        "release": release_data(release) if release is not None else None,
    }
    return queue(deployment.owner_id, event, data, wants=lambda _hook: True)
