"""Alert bodies."""

from __future__ import annotations

from marshmallow import fields

from deploy_service.models import AlertKind, AlertSeverity, AlertStatus
from deploy_service.schemas.common import Choice, PaginationArgs, ResponseSchema, page_schema


class AlertSchema(ResponseSchema):
    """An alert one of the reconciler's rules raised on a deployment; repeats count up, not anew."""

    id = fields.String()
    deployment_id = fields.String()
    agent_id = fields.String()
    severity = Choice(AlertSeverity)
    kind = Choice(AlertKind)
    message = fields.String()
    status = Choice(AlertStatus)
    count = fields.Integer(metadata={"description": "How many times the rule has fired while the alert was open."})
    first_seen_at = fields.DateTime()
    last_seen_at = fields.DateTime()
    acknowledged_at = fields.DateTime(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)


class AlertListArgs(PaginationArgs):
    status = Choice(AlertStatus)
    severity = Choice(AlertSeverity)
    deployment_id = fields.String()


AlertPageSchema = page_schema(AlertSchema, "AlertPage")
