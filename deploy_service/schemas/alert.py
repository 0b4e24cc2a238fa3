"""Alert bodies."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from deploy_service.schemas.common import PaginationArgs, page_schema

KINDS = (
    "deployment_failed",
    "crash_loop",
    "replica_unhealthy",
    "memory_high",
    "hallucination_rate_high",
    "error_rate_high",
)


class AlertSchema(Schema):
    id = fields.String()
    deployment_id = fields.String()
    agent_id = fields.String()
    severity = fields.String(metadata={"enum": ["critical", "warning", "info"]})
    kind = fields.String(metadata={"enum": list(KINDS)})
    message = fields.String()
    status = fields.String(metadata={"enum": ["active", "acknowledged", "resolved"]})
    count = fields.Integer()
    first_seen_at = fields.DateTime()
    last_seen_at = fields.DateTime()
    acknowledged_at = fields.DateTime(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)


class AlertListArgs(PaginationArgs):
    status = fields.String(validate=validate.OneOf(["active", "acknowledged", "resolved"]))
    severity = fields.String(validate=validate.OneOf(["critical", "warning", "info"]))
    deployment_id = fields.String()


AlertPageSchema = page_schema(AlertSchema, "AlertPage")
