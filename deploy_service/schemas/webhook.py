"""Webhook bodies: the signing secret appears only in the response that creates the webhook."""

from __future__ import annotations

from marshmallow import fields, validate

from deploy_service.models import AlertKind, AlertSeverity, AlertStatus, DeliveryStatus
from deploy_service.models.webhook import WebhookEvent
from deploy_service.references import MAX_WEBHOOK_URL_LENGTH
from deploy_service.schemas.common import Choice, JsonBodySchema, ResponseSchema, page_schema
from deploy_service.schemas.validators import validate_webhook_url


class WebhookCreateSchema(JsonBodySchema):
    """Where to send your alerts, and which ones."""

    url = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=MAX_WEBHOOK_URL_LENGTH), validate_webhook_url],
        metadata={
            "format": "http-url",
            "description": "An http:// or https:// URL in ASCII with a host (a DNS name, an IDN in its xn-- form, or "
            "an IP address), no credentials, and a port in 1-65535 if it names one.",
        },
    )
    severities = fields.List(Choice(AlertSeverity), metadata={"description": "Only these severities; default all."})
    kinds = fields.List(Choice(AlertKind), metadata={"description": "Only these kinds; default all."})


class WebhookSchema(ResponseSchema):
    """A registered webhook (never its secret); an empty filter list means all."""

    id = fields.String()
    url = fields.String()
    severities = fields.List(Choice(AlertSeverity))
    kinds = fields.List(Choice(AlertKind))
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


class WebhookPayloadSchema(ResponseSchema):
    """The JSON body a delivery POSTs to the webhook's URL."""

    type = Choice(WebhookEvent)
    timestamp = fields.String(metadata={"format": "date-time", "description": "When the delivery was queued."})
    data = fields.Nested(WebhookAlertSchema)


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
