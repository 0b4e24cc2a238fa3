"""Webhooks: register where alerts and deployment events go, sign and send the queued deliveries.

A webhook subscribes to `events` (default: the alert events, what every webhook got before there were
others); `severities` and `kinds` filter its alert events. Deliveries are queued in the transaction of the
change they tell (`webhook_events`).

Deliveries follow the Standard Webhooks scheme: headers `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is the
base64 part of the `whsec_...` secret shown once at creation (it is stored encrypted). Queued rows are
sent by the reconciler's dispatcher in the background, retried with exponential backoff up to
`WEBHOOK_MAX_ATTEMPTS`, and every attempt's outcome is kept in the delivery log.

Target URLs must be http(s) (`references.check_webhook_url`, in the request schema); hosts that
resolve to loopback, private, link-local or reserved addresses are refused unless
`WEBHOOK_ALLOW_PRIVATE_TARGETS` is set (tests set it) — checked when a webhook is created and again
by the sender at every attempt, which then connects to exactly the addresses it checked
(`webhook_sender`: one lookup, no redirects, one deadline, a bounded read).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select

from deploy_service.errors import NotFound, ValidationFailed
from deploy_service.extensions import db
from deploy_service.models import Alert, DeliveryStatus, Principal, Webhook, WebhookDelivery, WebhookEvent
from deploy_service.models.types import utcnow
from deploy_service.models.webhook import default_events
from deploy_service.security import decrypt_secret, encrypt_secret
from deploy_service.services import webhook_events
from deploy_service.services.common import Page, paginate, scope_to_owner
from deploy_service.services.lifecycle import stored_text
from deploy_service.services.webhook_sender import SendFailed, Target, UnsafeTarget, WebhookSender, resolve
from deploy_service.settings import current_settings

log = logging.getLogger(__name__)


def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse a URL the sender would not call: malformed, or (unless allowed) a host resolving to a
    non-public address.

    Raises:
        UnsafeTarget: with the reason, naming no address.
    """
    target = Target.parse(url)
    if not allow_private:
        resolve(target.host, target.port, allow_private=False)


def _check_url(url: str) -> None:
    """Raises: ValidationFailed: naming `url`, when the sender would not call it."""
    try:
        check_target(url, allow_private=current_settings().webhooks.allow_private_targets)
    except UnsafeTarget as exc:
        message = f"The webhook URL is refused: {exc}."
        raise ValidationFailed(message, details={"url": [message]}) from exc


def create_webhook(
    actor: Principal,
    *,
    url: str,
    severities: list[str] | None,
    kinds: list[str] | None,
    events: list[str] | None = None,
) -> tuple[Webhook, str]:
    """Register a webhook; returns it and its signing secret (shown once). Without `events`: the alert events."""
    _check_url(url)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    webhook = Webhook(
        owner_id=actor.id,
        url=url,
        severities=sorted(set(severities or [])),
        kinds=sorted(set(kinds or [])),
        events=sorted(set(events)) if events else default_events(),
        secret_ciphertext=encrypt_secret(secret),
    )
    db.session.add(webhook)
    db.session.commit()
    return webhook, secret


def get_webhook(actor: Principal, webhook_id: str) -> Webhook:
    """Raises: NotFound: no such webhook, or not the actor's."""
    return _get(actor, webhook_id)


def update_webhook(actor: Principal, webhook_id: str, changes: dict[str, Any]) -> Webhook:
    """Change a webhook's `url`, `severities`, `kinds` or `events` (those given); its secret stays.

    Raises:
        NotFound: no such webhook, or not the actor's.
        ValidationFailed: the new URL is one the sender would not call.
    """
    webhook = _get(actor, webhook_id)
    if "url" in changes:
        _check_url(changes["url"])
        webhook.url = changes["url"]
    for name in ("severities", "kinds", "events"):
        if name in changes:
            setattr(webhook, name, sorted(set(changes[name] or [])))
    db.session.commit()
    return webhook


def list_webhooks(actor: Principal, *, skip: int, limit: int) -> Page[Webhook]:
    stmt = scope_to_owner(select(Webhook), Webhook.owner_id, actor).order_by(Webhook.created_at.desc(), Webhook.id)
    return paginate(stmt, skip=skip, limit=limit)


def _get(actor: Principal, webhook_id: str) -> Webhook:
    webhook = db.session.get(Webhook, webhook_id)
    if webhook is None or (not actor.is_admin and webhook.owner_id != actor.id):
        raise NotFound("Webhook not found.")
    return webhook


def delete_webhook(actor: Principal, webhook_id: str) -> None:
    db.session.delete(_get(actor, webhook_id))
    db.session.commit()


def list_deliveries(actor: Principal, webhook_id: str, *, skip: int, limit: int) -> Page[WebhookDelivery]:
    webhook = _get(actor, webhook_id)
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook.id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
    )
    return paginate(stmt, skip=skip, limit=limit)


def enqueue(alert: Alert, event: WebhookEvent) -> int:
    """Queue a delivery of `alert` to each of its owner's webhooks that want it (caller commits)."""
    return webhook_events.alert_event(alert, event)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header value."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def due_deliveries(limit: int = 50) -> list[str]:
    """Ids of pending deliveries whose next attempt is due."""
    return list(
        db.session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= utcnow()),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
    )


def deliver(delivery_id: str, sender: WebhookSender, *, may_record: Callable[[], bool] = lambda: True) -> None:
    """Send one delivery attempt with `sender` and record its outcome (commits).

    Args:
        may_record: asked after the receiver answered; when False the outcome is not recorded (the
            sender lost its leadership meanwhile) and the delivery stays as it was.
    """
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return
    webhook = db.session.get(Webhook, delivery.webhook_id)
    if webhook is None:
        return
    settings = current_settings().webhooks
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    delivery.attempts += 1
    status: int | None = None
    error: str | None = None
    try:
        answer = sender.post(
            webhook.url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "deploy-service-webhooks",
                "webhook-id": delivery.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(decrypt_secret(webhook.secret_ciphertext), delivery.id, timestamp, body),
            },
            settings=settings,
        )
        status = answer.status
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except SendFailed as exc:
        error = str(exc)
    except Exception:  # noqa: BLE001 - recorded and retried like any failed attempt
        log.exception("webhook delivery %s: the attempt failed unexpectedly", delivery_id)
        error = "send failed"
    delivery.response_status = status
    delivery.error = stored_text(error) if error else None
    if error is None:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = DeliveryStatus.SUCCEEDED, utcnow(), None
    elif delivery.attempts >= settings.max_attempts:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
    else:
        delay = settings.retry_base * 2 ** (delivery.attempts - 1)
        delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
    if not may_record():
        db.session.rollback()
        log.info("not recording webhook delivery %s: leadership was lost", delivery_id)
        return
    db.session.commit()
