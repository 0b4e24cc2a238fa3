"""Deployment request and response bodies: deployments, instances, events, logs and results."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from deploy_service.models import WITHOUT_REPLICAS, DeploymentStatus, DesiredState
from deploy_service.schemas.agent import ENV_KEYS, ResourcesSchema, check_env_names
from deploy_service.schemas.common import NO_NUL_PATTERN, JsonBodySchema, PaginationArgs, StrictSchema, page_schema

STATUSES = tuple(status.value for status in DeploymentStatus)
MAX_RESULT_BYTES = 256 * 1024


class DeployOptionsSchema(JsonBodySchema):
    """Options of a deploy: replica count and deploy-time overrides of the agent's settings."""

    replicas = fields.Integer(load_default=1, validate=validate.Range(min=1), metadata={"description": "Default 1."})
    env = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.Length(max=32 * 1024)),
        metadata={"description": "Variables added to (or replacing) the agent's env for this deployment.", **ENV_KEYS},
    )
    resources = fields.Nested(ResourcesSchema, metadata={"description": "Overrides of the agent's resources."})

    @validates("env")
    def _env(self, value: dict[str, str], data_key: str, **_: Any) -> None:
        check_env_names(value, data_key)


class DeployBodySchema(DeployOptionsSchema):
    agent_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


class ScaleSchema(JsonBodySchema):
    replicas = fields.Integer(required=True, validate=validate.Range(min=1))


class InstanceSchema(Schema):
    id = fields.String()
    index = fields.Integer()
    container_id = fields.String(allow_none=True)
    status = fields.String()
    host = fields.String(allow_none=True)
    port = fields.Integer(allow_none=True)
    restarts = fields.Integer()
    started_at = fields.DateTime(allow_none=True)
    exit_code = fields.Integer(allow_none=True)
    healthy = fields.Boolean(allow_none=True)


# One instance, reused: building a schema deep-copies its fields, which would cost more than the dump.
_INSTANCES = InstanceSchema(many=True)


class ReplicaCountsSchema(Schema):
    desired = fields.Integer()
    running = fields.Integer()
    ready = fields.Integer()


def replica_counts(deployment: Any) -> dict[str, int]:
    """`{desired, running, ready}` from a deployment's instances."""
    desired = deployment.replicas_desired if deployment.status not in WITHOUT_REPLICAS else 0
    current = [i for i in deployment.instances if i.index < deployment.replicas_desired]
    return {"desired": desired, "running": sum(i.running for i in current), "ready": sum(i.ready for i in current)}


class DeploymentSchema(Schema):
    id = fields.String()
    agent_id = fields.String()
    owner_id = fields.String()
    status = fields.String(metadata={"enum": list(STATUSES)})
    desired_state = fields.String(metadata={"enum": [state.value for state in DesiredState]})
    replicas = fields.Method("_replicas", metadata={"type": "object"})
    image = fields.String(allow_none=True)
    revision = fields.Integer()
    generation = fields.Integer()
    config = fields.Method("_config", metadata={"type": "object"})
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    ready_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    instances = fields.Method("_instances", metadata={"type": "array", "items": {"type": "object"}})

    def _replicas(self, deployment: Any) -> dict[str, int]:
        return replica_counts(deployment)

    def _config(self, deployment: Any) -> dict[str, Any]:
        return {key: value for key, value in (deployment.config or {}).items() if key != "overrides"}

    def _instances(self, deployment: Any) -> list[dict[str, Any]]:
        live = deployment.status not in WITHOUT_REPLICAS
        shown = [i for i in deployment.instances if live and i.index < deployment.replicas_desired]
        return _INSTANCES.dump(shown)  # type: ignore[no-any-return]


class DeploymentSummarySchema(Schema):
    """What lists of agents show of their deployment."""

    id = fields.String()
    status = fields.String()
    replicas = fields.Method("_replicas", metadata={"type": "object"})
    created_at = fields.DateTime()
    ready_at = fields.DateTime(allow_none=True)

    def _replicas(self, deployment: Any) -> dict[str, int]:
        return replica_counts(deployment)


class DeploymentStatusSchema(Schema):
    """`GET /v1/agents/<id>/deployment-status`."""

    agent_id = fields.String()
    deployment_id = fields.String(attribute="id")
    status = fields.String()
    desired_state = fields.String()
    replicas = fields.Method("_replicas", metadata={"type": "object"})
    error = fields.String(allow_none=True)
    image = fields.String(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    ready_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime()

    def _replicas(self, deployment: Any) -> dict[str, int]:
        return replica_counts(deployment)


class DeploymentListArgs(PaginationArgs):
    agent_id = fields.String()
    status = fields.String(validate=validate.OneOf(STATUSES))


class EventSchema(Schema):
    id = fields.String()
    event_type = fields.String()
    status = fields.String()
    message = fields.String()
    data = fields.Dict()
    created_at = fields.DateTime()


class EventPageSchema(Schema):
    deployment_id = fields.String()
    deployment_status = fields.String()
    items = fields.List(fields.Nested(EventSchema))
    total = fields.Integer()
    skip = fields.Integer()
    limit = fields.Integer()


class EventListArgs(PaginationArgs):
    event_type = fields.String(validate=validate.Length(max=40))
    status = fields.String(validate=validate.OneOf(STATUSES))


class LogArgs(StrictSchema):
    tail = fields.Integer(load_default=100, validate=validate.Range(min=0, max=10_000))
    since = fields.AwareDateTime(default_timezone=None, metadata={"description": "ISO 8601 with a zone."})
    replica = fields.Integer(validate=validate.Range(min=0))
    source = fields.String(load_default="runtime", validate=validate.OneOf(["runtime", "build"]))
    follow = fields.Boolean(load_default=False, metadata={"description": "Stream as text/event-stream."})


class LogLineSchema(Schema):
    timestamp = fields.DateTime(allow_none=True)
    replica = fields.Integer(allow_none=True)
    stream = fields.String()
    line = fields.String()


class LogsSchema(Schema):
    deployment_id = fields.String()
    lines = fields.List(fields.Nested(LogLineSchema))


# What `ResultCreateSchema._results` accepts, for the spec (a Raw field documents no type).
# Any JSON value whose strings (and keys) PostgreSQL can store: no NUL character (see NO_NUL_PATTERN).
_JSON_VALUE: dict[str, Any] = {
    "anyOf": [
        {"type": ["number", "boolean", "null"]},
        {"type": "string", "pattern": NO_NUL_PATTERN},
        {"type": "array", "items": {"$ref": "#/components/schemas/ResultCreate/$defs/JsonValue"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL_PATTERN},
            "additionalProperties": {"$ref": "#/components/schemas/ResultCreate/$defs/JsonValue"},
        },
    ]
}
OPENAPI_RULES: dict[str, dict[str, Any]] = {
    "ResultCreate": {
        "$defs": {"JsonValue": _JSON_VALUE},
        "properties": {
            "results": {
                "oneOf": [
                    {"type": "string", "pattern": NO_NUL_PATTERN},
                    {
                        "type": "object",
                        "propertyNames": {"pattern": NO_NUL_PATTERN},
                        "additionalProperties": {"$ref": "#/components/schemas/ResultCreate/$defs/JsonValue"},
                    },
                ]
            }
        },
    },
}


class ResultCreateSchema(JsonBodySchema):
    results = fields.Raw(required=True, metadata={"description": "A string or a JSON object."})

    @validates("results")
    def _results(self, value: Any, **_: Any) -> None:
        if not isinstance(value, str | dict):
            raise ValidationError("Must be a string or an object.")
        if len(json.dumps(value)) > MAX_RESULT_BYTES:
            raise ValidationError(f"Must be at most {MAX_RESULT_BYTES} bytes.")


class ResultSchema(Schema):
    id = fields.String()
    deployment_id = fields.String()
    results = fields.Raw()
    created_by = fields.String()
    created_at = fields.DateTime()


DeploymentPageSchema = page_schema(DeploymentSchema, "DeploymentPage")
ResultPageSchema = page_schema(ResultSchema, "ResultPage")


class InstanceMetricsSchema(Schema):
    index = fields.Integer()
    container_id = fields.String()
    status = fields.String()
    healthy = fields.Boolean(allow_none=True)
    restarts = fields.Integer()
    cpu_percent = fields.Float(allow_none=True, metadata={"description": "Percent of one core."})
    memory_bytes = fields.Integer(allow_none=True)
    memory_limit_bytes = fields.Integer(allow_none=True)
    sampled_at = fields.DateTime(allow_none=True)


class DeploymentMetricsSchema(Schema):
    deployment_id = fields.String()
    status = fields.String()
    replicas = fields.Nested(ReplicaCountsSchema)
    restarts = fields.Integer()
    uptime_seconds = fields.Float()
    cpu_percent = fields.Float(allow_none=True, metadata={"description": "Sum over replicas, percent of one core."})
    memory_bytes = fields.Integer(allow_none=True)
    memory_limit_bytes = fields.Integer(allow_none=True)
    invocations = fields.Dict(metadata={"description": "`{count, errors, p50_ms, p95_ms}` over `window_hours`."})
    window_hours = fields.Integer()
    sampled_at = fields.DateTime(allow_none=True)
    instances = fields.List(fields.Nested(InstanceMetricsSchema))


class SystemMetricsSchema(Schema):
    total_deployments = fields.Integer()
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    active_deployments = fields.Integer(metadata={"description": "deploying, running or ready"})
    total_agents = fields.Integer()
    deployed_agents = fields.Integer(metadata={"description": "agents with a live (non-killed) deployment"})
    replicas_running = fields.Integer()
    deploy_success_rate_24h = fields.Float(
        allow_none=True,
        metadata={
            "description": "Of the deployments created in 24 h that finished deploying, the fraction that "
            "reached running; null when there are none."
        },
    )
    avg_deploy_seconds = fields.Float(allow_none=True, metadata={"description": "Creation to running, last 24 h."})
    p95_deploy_seconds = fields.Float(allow_none=True)
    restarts_24h = fields.Integer()
    active_alerts = fields.Dict(keys=fields.String(), values=fields.Integer())
    invocations_24h = fields.Integer()
    error_rate_24h = fields.Float(metadata={"description": "A fraction in [0, 1]."})
