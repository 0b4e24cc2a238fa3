"""Deployment request and response bodies: deployments, instances, events, logs and results."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, TypeVar, cast

from marshmallow import ValidationError, fields, validate, validates, validates_schema

from deploy_service.models import (
    WITHOUT_REPLICAS,
    AgentKind,
    DeploymentStatus,
    DesiredState,
    InstanceStatus,
    LogSource,
    LogStream,
    RestartPolicy,
)
from deploy_service.schemas.agent import (
    ENV_KEYS,
    TIMEOUT_WITHOUT_JOB,
    AgentInputSchema,
    HealthCheckSchema,
    ResourcesInputSchema,
    ResourcesSchema,
    SourceSchema,
    check_env_names,
)
from deploy_service.schemas.common import (
    NO_NUL_PATTERN,
    Choice,
    Computed,
    JsonBodySchema,
    PaginationArgs,
    ResponseSchema,
    StrictSchema,
    UtcDateTime,
    page_schema,
)
from deploy_service.schemas.evaluation import InvocationStatsSchema
from deploy_service.settings import current_settings

MAX_RESULT_BYTES = 256 * 1024


class DeployOptionsSchema(JsonBodySchema):
    """Options of a deploy: replica count and deploy-time overrides of the agent's settings."""

    replicas = fields.Integer(load_default=1, validate=validate.Range(min=1), metadata={"description": "Default 1."})
    env = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.Length(max=32 * 1024)),
        metadata={"description": "Variables added to (or replacing) the agent's env for this deployment.", **ENV_KEYS},
    )
    resources = fields.Nested(ResourcesInputSchema, metadata={"description": "Overrides of the agent's resources."})

    @validates("env")
    def _env(self, value: dict[str, str], data_key: str, **_: Any) -> None:
        check_env_names(value, data_key)


class DeployBodySchema(DeployOptionsSchema):
    """A deploy of the agent `agent_id`, with its options."""

    agent_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


FieldT = TypeVar("FieldT", bound=fields.Field[Any])


def _optional(field: FieldT, description: str) -> FieldT:
    """A copy of another schema's field that may be left out (its validators kept)."""
    optional = copy.copy(field)
    optional.required = False
    optional.metadata = {**field.metadata, "description": description}
    return optional


DEPLOY_OPTIONS = frozenset(DeployBodySchema().fields)
"""The fields of a deploy of an existing agent (`agent_id`, `replicas`, `env`, `resources`)."""
NEW_AGENT_ONLY = tuple(sorted(set(AgentInputSchema().fields) - DEPLOY_OPTIONS))
"""The agent's fields that only a deploy that makes a new agent takes: all of `AgentInputSchema`'s, whatever
it holds, but for `env` and `resources` (for an existing agent, overrides of its own)."""
WHAT_TO_DEPLOY = ("agent_id", "source", "image")


class DeploymentCreateSchema(AgentInputSchema):
    """`POST /v1/deployments`: a deploy of an existing agent (`agent_id`, with `replicas` and the `env` and
    `resources` overrides), or of a new agent made from a git `source` or an `image` and any other field of
    an agent (validated exactly as `POST /v1/agents` validates them; `name` is optional). Exactly one of
    `agent_id`, `source` and `image`."""

    agent_id = fields.String(
        validate=DeployBodySchema._declared_fields["agent_id"].validate,
        metadata={"description": "The agent to deploy; or give `source` or `image` to make one."},
    )
    name = _optional(
        cast(fields.String, AgentInputSchema._declared_fields["name"]),
        "The new agent's name (with `source` or `image`); default `<repo>-<branch>` for a source, "
        "`<image name>-<tag>` for an image, with `-2`, `-3`... added when you have an agent of that name.",
    )
    replicas = DeployOptionsSchema._declared_fields["replicas"]

    @validates_schema
    def _image_xor_source(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Overrides the agent's rule: exactly one of the three, and the agent's fields only for a new one
        (whose rule, about image, source, env and secrets, then applies as it is)."""
        given = [name for name in WHAT_TO_DEPLOY if data.get(name)]
        if len(given) != 1:
            message = "Give exactly one of agent_id, source or image."
            raise ValidationError({name: [message] for name in (given or WHAT_TO_DEPLOY)})
        if given == ["agent_id"]:
            extra = sorted(set(data) & set(NEW_AGENT_ONLY))
            if extra:
                raise ValidationError({name: ["Only for a new agent (with source or image)."] for name in extra})
            return
        AgentInputSchema._image_xor_source(self, data, **kwargs)


class ScaleSchema(JsonBodySchema):
    """The new replica count."""

    replicas = fields.Integer(required=True, validate=validate.Range(min=1))


INSTANCE_STATES = ", ".join(f"`{status.value}`" for status in InstanceStatus)
# The event types the service records (services/, reconciler/): documented, not enforced, since new
# kinds are added with new behaviour and old events keep theirs.
EVENT_TYPES = (
    "created, restart_requested, scaled, stop_requested, delete_requested, result_added, status_changed, "
    "alert_raised, build_queued, build_started, build_progress, build_failed, build_cancelled, image_ready, "
    "image_unavailable, image_missing, image_moved, images_removed, branch_moved, branch_unchecked, "
    "container_started, container_restarted, container_adopted, container_exited, container_missing, "
    "containers_removed, replica_replaced, replica_removed, restart_backoff, rollout_complete, health_passed, "
    "health_failed, service_created, service_scaled, service_removed, rolling_update, release_created, "
    "rollout_started, rollout_completed, rollout_failed, rolled_back, replicas_replaced, rollback_requested, "
    "replica_succeeded, job_succeeded, job_timed_out, "
    "agent_reported (posted by the agent or its owner: `POST /v1/deployments/{id}/events`)"
)


class InstanceSchema(ResponseSchema):
    """One replica slot of a deployment, as the reconciler last saw it."""

    id = fields.String()
    index = fields.Integer(metadata={"description": "The replica's slot, from 0."})
    container_id = fields.String(allow_none=True, metadata={"description": "Null until a container is started."})
    status = fields.String(
        metadata={
            "description": f"One of {INSTANCE_STATES}, or an engine state a fresh container was found in "
            "(`created`, `restarting`...), which never counts as running."
        }
    )
    host = fields.String(allow_none=True)
    port = fields.Integer(allow_none=True, metadata={"description": "The host port the replica is reached on."})
    restarts = fields.Integer()
    started_at = fields.DateTime(allow_none=True)
    exit_code = fields.Integer(
        allow_none=True,
        metadata={"description": "The last exit's code; kept after the run of a job (`succeeded`/`failed`) ended."},
    )
    healthy = fields.Boolean(allow_none=True, metadata={"description": "Null until its health is known."})


# One instance, reused: building a schema deep-copies its fields, which would cost more than the dump.
_INSTANCES = InstanceSchema(many=True)


class ReplicaCountsSchema(ResponseSchema):
    """How many replicas a deployment wants, and how many of those run and are ready."""

    desired = fields.Integer(metadata={"description": "0 for a stopped or killed deployment."})
    running = fields.Integer()
    ready = fields.Integer(metadata={"description": "Running and healthy: the replicas calls are sent to."})


def replica_counts(deployment: Any) -> dict[str, int]:
    """`{desired, running, ready}` from a deployment's instances."""
    desired = deployment.replicas_desired if deployment.status not in WITHOUT_REPLICAS else 0
    current = [i for i in deployment.instances if i.index < deployment.replicas_desired]
    return {"desired": desired, "running": sum(i.running for i in current), "ready": sum(i.ready for i in current)}


class DeploymentConfigSchema(ResponseSchema):
    """The runtime config a deployment runs with: the agent's settings when it was (re)started, plus the
    deploy-time overrides (`services.deployments.resolve_config`); secrets appear by name only."""

    image = fields.String(allow_none=True, metadata={"description": "Null for an agent built from a git source."})
    source = fields.Nested(SourceSchema, allow_none=True)
    port = fields.Integer()
    invoke_path = fields.String()
    command = fields.List(fields.String(), allow_none=True)
    env = fields.Dict(keys=fields.String(), values=fields.String())
    secrets = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"description": "`{ENV_NAME: secret name}`."}
    )
    health_check = fields.Nested(HealthCheckSchema, allow_none=True)
    resources = fields.Nested(ResourcesSchema)
    read_only_rootfs = fields.Boolean()
    run_as_user = fields.String(
        allow_none=True,
        metadata={
            "description": "The agent's `uid[:gid]`; null: the image's non-zero numeric user or the default one."
        },
    )
    kind = Choice(
        AgentKind, metadata={"optional": True, "description": "Absent for a service that restarts always (the default)"}
    )
    restart_policy = Choice(
        RestartPolicy,
        metadata={"optional": True, "description": "Absent for a service that restarts always (the default)."},
    )
    timeout_seconds = fields.Float(
        allow_none=True, metadata={"optional": True, "description": "A job's only; null: no limit."}
    )


class ReleaseSourceSchema(ResponseSchema):
    """The git source a release was built from."""

    git_url = fields.String(metadata={"format": "git-url", "example": "https://github.com/acme/agent.git"})
    branch = fields.String(metadata={"example": "main"})
    commit = fields.String(allow_none=True, metadata={"description": "The full SHA built; null until recorded."})


class DeploymentSchema(ResponseSchema):
    """A deployment: what was asked (`desired_state`, `replicas.desired`) and what runs (`status`, instances)."""

    id = fields.String()
    agent_id = fields.String()
    owner_id = fields.String()
    status = Choice(DeploymentStatus)
    desired_state = Choice(DesiredState)
    replicas = Computed("_replicas", schema=ReplicaCountsSchema)
    image = fields.String(allow_none=True)
    revision = fields.Integer(
        metadata={"description": "The number of its current release (`GET .../releases/{number}`): its newest."}
    )
    generation = fields.Integer(metadata={"description": "Bumped by each restart."})
    config = Computed("_config", schema=DeploymentConfigSchema)
    source = Computed(
        "_source",
        schema=ReleaseSourceSchema,
        allow_none=True,
        metadata={
            "description": "For an agent built from git: the repository, branch and the commit its current "
            "release built (null until a build checked it out); null for an image agent."
        },
    )
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    ready_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    instances = Computed(
        "_instances",
        schema=InstanceSchema,
        many=True,
        metadata={"description": "The desired replica slots; none for a stopped or killed deployment."},
    )

    def _replicas(self, deployment: Any) -> dict[str, int]:
        return replica_counts(deployment)

    def _config(self, deployment: Any) -> dict[str, Any]:
        return {
            key: value
            for key, value in (deployment.config or {}).items()
            if key not in ("overrides", "secret_versions")
        }

    def _source(self, deployment: Any) -> dict[str, Any] | None:
        release = deployment.current_release
        return release.source if release is not None else None

    def _instances(self, deployment: Any) -> list[dict[str, Any]]:
        live = deployment.status not in WITHOUT_REPLICAS
        shown = [i for i in deployment.instances if live and i.index < deployment.replicas_desired]
        return _INSTANCES.dump(shown)  # type: ignore[no-any-return]


class DeploymentSummarySchema(ResponseSchema):
    """What lists of agents show of their deployment."""

    id = fields.String()
    status = Choice(DeploymentStatus)
    replicas = Computed("_replicas", schema=ReplicaCountsSchema)
    created_at = fields.DateTime()
    ready_at = fields.DateTime(allow_none=True)

    def _replicas(self, deployment: Any) -> dict[str, int]:
        return replica_counts(deployment)


class AgentDeploymentStatusSchema(ResponseSchema):
    """`GET /v1/agents/<id>/deployment-status`: the agent's live (else most recent) deployment, in short."""

    agent_id = fields.String()
    deployment_id = fields.String(attribute="id")
    status = Choice(DeploymentStatus)
    desired_state = Choice(DesiredState)
    replicas = Computed("_replicas", schema=ReplicaCountsSchema)
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
    status = Choice(DeploymentStatus)


class EventSchema(ResponseSchema):
    """Something that happened to a deployment, stamped with the deployment's status at the time."""

    id = fields.String()
    event_type = fields.String(metadata={"description": f"What happened; the service records: {EVENT_TYPES}."})
    status = Choice(DeploymentStatus)
    message = fields.String()
    data = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(metadata={"description": "Any JSON value."}),
        metadata={"description": "Details of the event; the keys depend on `event_type`."},
    )
    created_at = fields.DateTime()


MAX_REPORT_DATA_BYTES = 16 * 1024
VISIBLE = re.compile(r"^[^\u0000]*[^\s\u0000-\u001f\u007f][^\u0000]*$")
"""Text with a character that is neither a space nor a control character (which events store as spaces), and no
NUL (which no text column stores)."""
MAX_REPORT_DATA_DEPTH = 8
REPORT_EXAMPLE = {"message": "Indexed 1200 of 5000 documents.", "data": {"done": 1200, "total": 5000}}


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0, `{}` and `[]` are 1)."""
    if isinstance(value, dict):
        return 1 + max(map(json_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(json_depth, value), default=0)
    return 0


class EventReportSchema(JsonBodySchema):
    """What an agent reports of its own progress: an `agent_reported` event."""

    message = fields.String(
        required=True,
        validate=validate.Length(min=1),
        metadata={
            "description": "One line, at most `STORED_TEXT_MAX_CHARS` (500) characters, with something besides "
            "spaces; control characters (newlines) are stored as spaces.",
            "pattern": VISIBLE.pattern,
        },
    )
    data = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(allow_none=True, metadata={"description": "Any JSON value."}),
        metadata={
            "description": f"Any JSON object: at most {MAX_REPORT_DATA_BYTES} bytes as JSON, objects and arrays "
            f"nested at most {MAX_REPORT_DATA_DEPTH} deep. Default `{{}}`.",
        },
    )

    @validates("message")
    def _message(self, value: str, **_: Any) -> None:
        limit = current_settings().stored_text_max
        if not VISIBLE.search(value):
            raise ValidationError("Must hold something besides spaces and control characters.")
        if len(value) > limit:
            raise ValidationError(f"Must be at most {limit} characters.")

    @validates("data")
    def _data(self, value: dict[str, Any], **_: Any) -> None:
        if json_depth(value) > MAX_REPORT_DATA_DEPTH:
            raise ValidationError(f"Objects and arrays may nest at most {MAX_REPORT_DATA_DEPTH} deep.")
        if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_REPORT_DATA_BYTES:
            raise ValidationError(f"Must be at most {MAX_REPORT_DATA_BYTES} bytes as JSON.")


class EventPageSchema(ResponseSchema):
    deployment_id = fields.String()
    deployment_status = Choice(DeploymentStatus)
    items = fields.List(fields.Nested(EventSchema))
    total = fields.Integer()
    skip = fields.Integer()
    limit = fields.Integer()


class FeedEventSchema(EventSchema):
    """An event of the feed: an event with the deployment and the agent it is about."""

    deployment_id = fields.String()
    agent_id = fields.String()


class FeedPageSchema(ResponseSchema):
    """A page of the event feed, newest first."""

    items = fields.List(fields.Nested(FeedEventSchema))
    total = fields.Integer(metadata={"description": "Every event of the feed under these filters."})
    skip = fields.Integer()
    limit = fields.Integer()
    next_before = fields.String(
        allow_none=True,
        metadata={"description": "Pass as `before` for the next page (the last item's id); null on the last page."},
    )


class FeedArgs(PaginationArgs):
    event_type = fields.String(validate=validate.Length(max=40), metadata={"description": f"One of: {EVENT_TYPES}."})
    deployment_id = fields.String(validate=validate.Length(max=64))
    agent_id = fields.String(validate=validate.Length(max=64))
    since = UtcDateTime(metadata={"description": "Only events recorded at or after this time (ISO 8601, a zone)."})
    before = fields.String(
        validate=validate.Length(max=64),
        metadata={
            "description": "An event id (the previous page's `next_before`): only events older than it. Pages "
            "by keyset, as fast deep in the feed as at its start; `skip` then counts from there."
        },
    )


class EventListArgs(PaginationArgs):
    event_type = fields.String(validate=validate.Length(max=40), metadata={"description": f"One of: {EVENT_TYPES}."})
    status = Choice(DeploymentStatus)


class LogArgs(StrictSchema):
    tail = fields.Integer(load_default=100, validate=validate.Range(min=0, max=10_000))
    since = UtcDateTime(metadata={"description": "ISO 8601 with a zone."})
    replica = fields.Integer(validate=validate.Range(min=0))
    source = Choice(LogSource, load_default=LogSource.RUNTIME.value)
    follow = fields.Boolean(load_default=False, metadata={"description": "Stream as text/event-stream."})
    previous = fields.Boolean(
        load_default=False,
        metadata={
            "description": "The stored lines of `replica`'s previous container (required with it; runtime "
            "logs only, not followed); 404 when none is stored."
        },
    )

    @validates_schema
    def _previous_of_one_replica(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("previous"):
            return
        if data.get("replica") is None:
            raise ValidationError({"replica": ["Required with previous=true."]})
        if data.get("follow"):
            raise ValidationError({"follow": ["A previous container's lines are not followed."]})
        if data.get("source") == LogSource.BUILD:
            raise ValidationError({"source": ["previous=true reads runtime logs."]})


class LogLineSchema(ResponseSchema):
    """One line of output."""

    timestamp = fields.DateTime(allow_none=True)
    replica = fields.Integer(allow_none=True, metadata={"description": "Null for build lines."})
    stream = Choice(LogStream)
    line = fields.String()


class LogsSchema(ResponseSchema):
    deployment_id = fields.String()
    lines = fields.List(fields.Nested(LogLineSchema))


def _results_schema(component: str) -> dict[str, Any]:
    """The spec of `results`: a string, or a JSON object; no string or key anywhere in it holds a NUL.

    Client generators cannot type a recursive union (openapi-python-client drops the schema, and with
    it the operation), so what they read is `string | {[key: string]: unknown}`. The recursion that
    says "no NUL at any depth" sits under `if` (with `else: false`, the object must match it), which
    validators and the fuzzer apply and the generators ignore.
    """
    strict = f"#/components/schemas/{component}/properties/results/anyOf/1/if"
    value = f"{strict}/$defs/JsonValue"
    json_value = {
        "anyOf": [
            {"type": ["number", "boolean", "null"]},
            {"type": "string", "pattern": NO_NUL_PATTERN},
            {"type": "array", "items": {"$ref": value}},
            {"$ref": strict},
        ]
    }
    return {
        "anyOf": [
            {"type": "string", "pattern": NO_NUL_PATTERN},
            {
                "type": "object",
                "additionalProperties": True,
                "if": {
                    "$defs": {"JsonValue": json_value},
                    "type": "object",
                    "propertyNames": {"pattern": NO_NUL_PATTERN},
                    "additionalProperties": {"$ref": value},
                },
                "else": False,
            },
        ]
    }


_PRESENT = {"agent_id": {"type": "string"}, "image": {"type": "string"}, "source": {"type": "object"}}


def _both(first: str, second: str) -> dict[str, Any]:
    return {"required": [first, second], "properties": {first: _PRESENT[first], second: _PRESENT[second]}}


# `DeploymentCreate`'s cross-field rules (`DeploymentCreateSchema._image_xor_source`), said with `not` as
# `schemas.agent.OPENAPI_RULES` says the agent's: exactly one of agent_id, image and source, and no new
# agent's field beside agent_id.
_DEPLOYMENT_CREATE_REFUSED: list[dict[str, Any]] = [
    _both("agent_id", "image"),
    _both("agent_id", "source"),
    _both("image", "source"),
    {"not": {"required": ["agent_id"]}, "properties": {"image": {"type": "null"}, "source": {"type": "null"}}},
    {"required": ["agent_id"], "anyOf": [{"required": [name]} for name in NEW_AGENT_ONLY]},
    TIMEOUT_WITHOUT_JOB,
]
OPENAPI_RULES: dict[str, dict[str, Any]] = {
    "DeploymentCreate": {"not": {"anyOf": _DEPLOYMENT_CREATE_REFUSED}},
    "ResultCreate": {"properties": {"results": _results_schema("ResultCreate")}},
    "Result": {"properties": {"results": _results_schema("Result")}},
}
RESULT_EXAMPLE = {"results": {"answer": "42", "score": 0.93, "sources": ["doc-1", "doc-7"]}}


class ResultCreateSchema(JsonBodySchema):
    results = fields.Raw(
        required=True,
        metadata={"description": f"A string or a JSON object, at most {MAX_RESULT_BYTES} bytes as JSON."},
    )

    @validates("results")
    def _results(self, value: Any, **_: Any) -> None:
        if not isinstance(value, str | dict):
            raise ValidationError("Must be a string or an object.")
        if len(json.dumps(value)) > MAX_RESULT_BYTES:
            raise ValidationError(f"Must be at most {MAX_RESULT_BYTES} bytes.")


class ResultSchema(ResponseSchema):
    """Something a deployment produced, as it was posted."""

    id = fields.String()
    deployment_id = fields.String()
    results = fields.Raw(metadata={"description": "A string or a JSON object."})
    created_by = fields.String(metadata={"description": "`user:<id>` or `key:<api key id>`."})
    created_at = fields.DateTime()


DeploymentPageSchema = page_schema(DeploymentSchema, "DeploymentPage")
ResultPageSchema = page_schema(ResultSchema, "ResultPage")


class InstanceMetricsSchema(ResponseSchema):
    """One replica's latest resource sample."""

    index = fields.Integer()
    container_id = fields.String()
    status = fields.String(metadata={"description": "As `Instance.status`."})
    healthy = fields.Boolean(allow_none=True)
    restarts = fields.Integer()
    cpu_percent = fields.Float(allow_none=True, metadata={"description": "Percent of one core."})
    memory_bytes = fields.Integer(allow_none=True)
    memory_limit_bytes = fields.Integer(allow_none=True)
    sampled_at = fields.DateTime(allow_none=True, metadata={"description": "Null until the replica is sampled."})


class DeploymentMetricsSchema(ResponseSchema):
    """A deployment's figures: sums over its replicas' latest samples, and each replica's."""

    deployment_id = fields.String()
    status = Choice(DeploymentStatus)
    replicas = fields.Nested(ReplicaCountsSchema)
    restarts = fields.Integer()
    uptime_seconds = fields.Float()
    cpu_percent = fields.Float(allow_none=True, metadata={"description": "Sum over replicas, percent of one core."})
    memory_bytes = fields.Integer(allow_none=True)
    memory_limit_bytes = fields.Integer(allow_none=True)
    invocations = fields.Nested(InvocationStatsSchema, metadata={"description": "Over `window_hours`."})
    window_hours = fields.Integer()
    sampled_at = fields.DateTime(allow_none=True)
    instances = fields.List(fields.Nested(InstanceMetricsSchema))


class SystemMetricsSchema(ResponseSchema):
    """How every deployment the caller can see is doing."""

    total_deployments = fields.Integer()
    by_status = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={
            "description": "Deployments per status, every status present (zeros included).",
            "property_names": {"$ref": "#/components/schemas/DeploymentStatus"},
        },
    )
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
    active_alerts = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={
            "description": "Active alerts per severity, every severity present (zeros included).",
            "property_names": {"$ref": "#/components/schemas/AlertSeverity"},
        },
    )
    invocations_24h = fields.Integer()
    error_rate_24h = fields.Float(metadata={"description": "A fraction in [0, 1]."})
