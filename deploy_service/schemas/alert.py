"""Alert bodies."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from deploy_service.models import AlertKind, AlertSeverity, AlertStatus
from deploy_service.schemas.common import PaginationArgs, page_schema

KINDS = [kind.value for kind in AlertKind]
SEVERITIES = [severity.value for severity in AlertSeverity]
STATUSES = [status.value for status in AlertStatus]


class AlertSchema(Schema):
    id = fields.String()
    deployment_id = fields.String()
    agent_id = fields.String()
    severity = fields.String(metadata={"enum": SEVERITIES})
    kind = fields.String(metadata={"enum": KINDS})
    message = fields.String()
    status = fields.String(metadata={"enum": STATUSES})
    count = fields.Integer()
    first_seen_at = fields.DateTime()
    last_seen_at = fields.DateTime()
    acknowledged_at = fields.DateTime(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)


class AlertListArgs(PaginationArgs):
    status = fields.String(validate=validate.OneOf(STATUSES))
    severity = fields.String(validate=validate.OneOf(SEVERITIES))
    deployment_id = fields.String()


AlertPageSchema = page_schema(AlertSchema, "AlertPage")
