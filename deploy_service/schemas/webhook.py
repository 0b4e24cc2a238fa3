"""Webhook bodies: the signing secret appears only in the response that creates the webhook."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from deploy_service.models import DeliveryStatus
from deploy_service.schemas.alert import KINDS, SEVERITIES
from deploy_service.schemas.common import JsonBodySchema, page_schema


class WebhookCreateSchema(JsonBodySchema):
    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2048),
        metadata={"format": "http-url", "description": "An http:// or https:// URL with a host, no credentials."},
    )
    severities = fields.List(
        fields.String(validate=validate.OneOf(SEVERITIES)),
        metadata={"description": "Only these severities; default all."},
    )
    kinds = fields.List(
        fields.String(validate=validate.OneOf(KINDS)), metadata={"description": "Only these kinds; default all."}
    )


class WebhookSchema(Schema):
    id = fields.String()
    url = fields.String()
    severities = fields.List(fields.String())
    kinds = fields.List(fields.String())
    created_at = fields.DateTime()


class CreatedWebhookSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "`whsec_...`: verify signatures with it. Shown once."})


class DeliverySchema(Schema):
    id = fields.String()
    event = fields.String()
    status = fields.String(metadata={"enum": [status.value for status in DeliveryStatus]})
    attempts = fields.Integer()
    response_status = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    payload = fields.Dict()


WebhookPageSchema = page_schema(WebhookSchema, "WebhookPage")
DeliveryPageSchema = page_schema(DeliverySchema, "WebhookDeliveryPage")
