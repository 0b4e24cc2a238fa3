"""Sending queued webhook deliveries in the background, so a slow receiver never blocks a pass.

Only a leader sends: `dispatch_due` starts nothing while the process does not lead, and a send whose
term ended while the receiver answered records nothing (`leadership.py`): the delivery stays pending
and the new leader sends it again (receivers deduplicate by the `webhook-id` header).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import WebhookDelivery
from deploy_service.models.types import utcnow
from deploy_service.reconciler.leadership import Leadership
from deploy_service.services import webhooks
from deploy_service.services.webhook_sender import WebhookSender

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, app: Flask, *, leadership: Leadership | None = None) -> None:
        self.app = app
        self.leadership = leadership or Leadership(leading=True)
        """Whose leadership gates the sends (the reconciler's own; by default, always leading)."""
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="webhooks")
        self.sender = WebhookSender()
        """Makes each attempt: one lookup, the checked address, one deadline (`services.webhook_sender`)."""
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()

    def dispatch_due(self) -> float | None:
        """Start sending every due delivery; returns seconds until the next pending one is due, if any.

        Returns None, starting nothing, while this process does not lead.
        """
        term = self.leadership.term()
        if term is None:
            return None
        for delivery_id in webhooks.due_deliveries():
            with self._lock:
                if delivery_id in self._in_flight:
                    continue
                self._in_flight.add(delivery_id)
            self.pool.submit(self._send, delivery_id, term)
        soonest = db.session.scalar(
            select(func.min(WebhookDelivery.next_attempt_at)).where(WebhookDelivery.status == "pending")
        )
        return None if soonest is None else max((soonest - utcnow()).total_seconds(), 0.0)

    def _send(self, delivery_id: str, term: int) -> None:
        try:
            with self.app.app_context():
                try:
                    webhooks.deliver(delivery_id, self.sender, may_record=lambda: self.leadership.holds(term))
                finally:
                    db.session.remove()
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", delivery_id)
        finally:
            with self._lock:
                self._in_flight.discard(delivery_id)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
