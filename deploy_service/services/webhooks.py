"""Webhooks: register where alerts go, queue a delivery per matching webhook, sign and send them.

Deliveries follow the Standard Webhooks scheme: headers `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is the
base64 part of the `whsec_...` secret shown once at creation (it is stored encrypted). Queued rows are
sent by the reconciler's dispatcher in the background, retried with exponential backoff up to
`WEBHOOK_MAX_ATTEMPTS`, and every attempt's outcome is kept in the delivery log.

Target URLs must be http(s); addresses that resolve to loopback, private, link-local or reserved
ranges are refused unless `WEBHOOK_ALLOW_PRIVATE_TARGETS` is set (tests set it) — checked when a
webhook is created and again before every send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import or_, select

from deploy_service.errors import NotFound, ValidationFailed
from deploy_service.extensions import db
from deploy_service.models import Alert, DeliveryStatus, Principal, Webhook, WebhookDelivery
from deploy_service.models.types import utcnow
from deploy_service.security import decrypt_secret, encrypt_secret
from deploy_service.services.common import Page, paginate, scope_to_owner
from deploy_service.settings import current_settings

log = logging.getLogger(__name__)


class UnsafeTarget(ValueError):
    """The URL is not one the service may call."""


def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse non-http(s) URLs and, unless allowed, hosts resolving to non-public addresses.

    Raises:
        UnsafeTarget: with the reason.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTarget("Only http:// and https:// URLs with a host are allowed.")
    if parts.username or parts.password:
        raise UnsafeTarget("Credentials in the URL are not allowed.")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise UnsafeTarget(f"The host {parts.hostname!r} does not resolve.") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise UnsafeTarget(f"The host resolves to a non-public address ({address}).")


def create_webhook(
    actor: Principal, *, url: str, severities: list[str] | None, kinds: list[str] | None
) -> tuple[Webhook, str]:
    """Register a webhook; returns it and its signing secret (shown once)."""
    try:
        check_target(url, allow_private=current_settings().webhooks.allow_private_targets)
    except UnsafeTarget as exc:
        raise ValidationFailed(str(exc), details={"url": [str(exc)]}) from exc
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    webhook = Webhook(
        owner_id=actor.id,
        url=url,
        severities=sorted(set(severities or [])),
        kinds=sorted(set(kinds or [])),
        secret_ciphertext=encrypt_secret(secret),
    )
    db.session.add(webhook)
    db.session.commit()
    return webhook, secret


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


def enqueue(alert: Alert, event: str) -> int:
    """Queue a delivery of `alert` to each of its owner's webhooks that want it (caller commits)."""
    hooks = db.session.scalars(select(Webhook).where(Webhook.owner_id == alert.owner_id)).all()
    payload = {
        "type": event,
        "timestamp": utcnow().isoformat(),
        "data": {
            "id": alert.id,
            "deployment_id": alert.deployment_id,
            "agent_id": alert.agent_id,
            "severity": alert.severity,
            "kind": alert.kind,
            "message": alert.message,
            "status": alert.status,
            "count": alert.count,
        },
    }
    queued = 0
    for hook in hooks:
        if (hook.severities and alert.severity not in hook.severities) or (hook.kinds and alert.kind not in hook.kinds):
            continue
        db.session.add(WebhookDelivery(webhook_id=hook.id, event=event, payload=payload, next_attempt_at=utcnow()))
        queued += 1
    return queued


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


def deliver(delivery_id: str, http: Any, *, may_record: Callable[[], bool] = lambda: True) -> None:
    """Send one delivery attempt with `http` (a urllib3 pool) and record its outcome (commits).

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
        check_target(webhook.url, allow_private=settings.allow_private_targets)
        response = http.request(
            "POST",
            webhook.url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "deploy-service-webhooks",
                "webhook-id": delivery.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(decrypt_secret(webhook.secret_ciphertext), delivery.id, timestamp, body),
            },
            timeout=settings.timeout,
            retries=False,
            redirect=False,
        )
        status = int(response.status)
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except UnsafeTarget as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure of the receiver is recorded and retried
        error = type(exc).__name__
    delivery.response_status = status
    delivery.error = error
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
