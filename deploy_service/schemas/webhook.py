"""Webhook bodies: the signing secret appears only in the response that creates the webhook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import fields, validate

from deploy_service.models import (
    AlertKind,
    AlertSeverity,
    AlertStatus,
    DeliveryStatus,
    DeploymentStatus,
    ReleaseReason,
    ReleaseStatus,
)
from deploy_service.models.webhook import ALERT_EVENTS, WebhookEvent
from deploy_service.references import MAX_WEBHOOK_URL_LENGTH
from deploy_service.schemas.common import Choice, JsonBodySchema, OneOf, ResponseSchema, page_schema
from deploy_service.schemas.validators import validate_webhook_url

_URL = {
    "format": "http-url",
    "description": "An http:// or https:// URL in ASCII with a host (a DNS name, an IDN in its xn-- form, or "
    "an IP address), no credentials, and a port in 1-65535 if it names one.",
}
_URL_CHECKS: list[Callable[[Any], Any]] = [validate.Length(min=1, max=MAX_WEBHOOK_URL_LENGTH), validate_webhook_url]
_SEVERITIES = "Only alerts of these severities; empty: all. Filters the alert events only."
_KINDS = "Only alerts of these kinds; empty: all. Filters the alert events only."
_EVENTS = (
    "The events the webhook gets, at least one: `alert.raised`, `alert.resolved` (an alert of yours, filtered by "
    "`severities` and `kinds`), `release.activated` (a release's rollout completed: it is what runs now), "
    "`release.failed` (a release's rollout failed, was stopped or replaced before it was ready, or was rolled back "
    "automatically), `deployment.failed` (a deployment's status became `failed`). Default: "
    + ", ".join(f"`{event}`" for event in ALERT_EVENTS)
    + " (what every webhook got before the other events existed). Another name is a 400 `validation_error`."
)


class WebhookCreateSchema(JsonBodySchema):
    """Where to send your alerts and deployment events, and which ones."""

    url = fields.String(required=True, validate=_URL_CHECKS, metadata=_URL)
    severities = fields.List(Choice(AlertSeverity), metadata={"description": _SEVERITIES})
    kinds = fields.List(Choice(AlertKind), metadata={"description": _KINDS})
    events = fields.List(Choice(WebhookEvent), validate=validate.Length(min=1), metadata={"description": _EVENTS})


class WebhookUpdateSchema(JsonBodySchema):
    """The fields to change (the others stay; the secret always does)."""

    url = fields.String(validate=_URL_CHECKS, metadata=_URL)
    severities = fields.List(Choice(AlertSeverity), metadata={"description": _SEVERITIES})
    kinds = fields.List(Choice(AlertKind), metadata={"description": _KINDS})
    events = fields.List(Choice(WebhookEvent), validate=validate.Length(min=1), metadata={"description": _EVENTS})


class WebhookSchema(ResponseSchema):
    """A registered webhook (never its secret); an empty filter list means all."""

    id = fields.String()
    url = fields.String()
    severities = fields.List(Choice(AlertSeverity))
    kinds = fields.List(Choice(AlertKind))
    events = fields.List(Choice(WebhookEvent), metadata={"description": "The events it gets."})
    created_at = fields.DateTime()


class CreatedWebhookSchema(WebhookSchema):
    """The one response that shows the webhook's signing secret."""

    secret = fields.String(metadata={"description": "`whsec_...`: verify signatures with it. Shown once."})


class WebhookAlertSchema(ResponseSchema):
    """The alert a delivery is about, as it was when the delivery was queued."""

    id = fields.String()
    deployment_id = fields.String()
    agent_id = fields.String()
    severity = Choice(AlertSeverity)
    kind = Choice(AlertKind)
    message = fields.String()
    status = Choice(AlertStatus)
    count = fields.Integer()


class WebhookReleaseSchema(ResponseSchema):
    """The release a deployment event is about, as it was when the event happened."""

    number = fields.Integer()
    status = Choice(ReleaseStatus)
    reason = Choice(ReleaseReason)
    rollback_of = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True, metadata={"description": "Why it failed (`release.failed`)."})


class WebhookDeploymentEventSchema(ResponseSchema):
    """What a `release.activated`, `release.failed` or `deployment.failed` event tells."""

    deployment_id = fields.String()
    agent_id = fields.String()
    deployment_status = Choice(
        DeploymentStatus,
        metadata={
            "description": "The deployment's status then: `failed` for `deployment.failed`; after an automatic "
            "rollback (`release.failed`) the status it kept, serving its previous release."
        },
    )
    error = fields.String(allow_none=True, metadata={"description": "The deployment's error, when it failed."})
    release = fields.Nested(
        WebhookReleaseSchema,
        allow_none=True,
        metadata={
            "description": "The release activated or failed; for `deployment.failed`, the release it was running or "
            "rolling out (null if none)."
        },
    )


class WebhookPayloadSchema(ResponseSchema):
    """The JSON body a delivery POSTs to the webhook's URL."""

    type = Choice(WebhookEvent)
    timestamp = fields.String(
        metadata={"format": "date-time", "description": "When the event happened (its delivery was queued)."}
    )
    data = OneOf(
        WebhookAlertSchema,
        WebhookDeploymentEventSchema,
        metadata={
            "description": "`alert.*`: the alert (`WebhookAlert`); `release.*` and `deployment.failed`: the "
            "deployment and release (`WebhookDeploymentEvent`)."
        },
    )


class WebhookDeliverySchema(ResponseSchema):
    """One delivery of an event to a webhook, with the outcome of its latest attempt."""

    id = fields.String()
    event = Choice(WebhookEvent)
    status = Choice(DeliveryStatus)
    attempts = fields.Integer()
    response_status = fields.Integer(allow_none=True, metadata={"description": "The receiver's last HTTP status."})
    error = fields.String(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    payload = fields.Nested(WebhookPayloadSchema)


WebhookPageSchema = page_schema(WebhookSchema, "WebhookPage")
DeliveryPageSchema = page_schema(WebhookDeliverySchema, "WebhookDeliveryPage")
