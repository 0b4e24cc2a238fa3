"""Bodies of the system routes."""

from __future__ import annotations

from marshmallow import fields

from deploy_service.schemas.common import ResponseSchema


class SystemLimitsSchema(ResponseSchema):
    """The maxima an agent or a deployment may ask for (`MAX_REPLICAS`, `AGENT_MAX_CPU`, `AGENT_MAX_MEMORY_MB`)."""

    max_replicas = fields.Integer(metadata={"example": 50})
    max_cpu = fields.Float(metadata={"example": 4.0})
    max_memory_mb = fields.Integer(metadata={"example": 8192})


class SystemInfoSchema(ResponseSchema):
    """What this service runs and allows."""

    version = fields.String(metadata={"example": "1.1.0"})
    runner = fields.String(metadata={"description": "`docker` or `swarm` (`RUNNER`).", "example": "docker"})
    network_mode = fields.String(
        metadata={
            "description": "`host` or `bridge` as replicas get it (`DOCKER_NETWORK_MODE`; `auto` until the engine "
            "first answered).",
            "example": "bridge",
        }
    )
    database = fields.String(metadata={"description": "`sqlite` or `postgresql`.", "example": "postgresql"})
    features = fields.List(
        fields.String(),
        metadata={
            "description": "What this instance does, sorted: always `agent_reports`, `deploy_from_source`, "
            "`event_feed`, `git_sources`, `log_follow`, `quotas`, `registry_auth`, `releases`, `rollback`, "
            "`stored_logs`, `webhooks`; and `auto_rollback` (`AUTO_ROLLBACK`), `registration` "
            "(`REGISTRATION_ENABLED`) when on."
        },
    )
    limits = fields.Nested(SystemLimitsSchema)


class SystemDatabaseSchema(ResponseSchema):
    kind = fields.String(metadata={"description": "`sqlite` or `postgresql`.", "example": "postgresql"})
    ok = fields.Boolean(metadata={"description": "It answered `SELECT 1`."})
    migration = fields.String(
        allow_none=True,
        metadata={"description": "The schema's Alembic revision (null: none).", "example": "c3a9e5f17b42"},
    )
    latest = fields.String(
        allow_none=True,
        metadata={"description": "The newest migration this version ships; `migration` equals it when current."},
    )


class SystemEngineSchema(ResponseSchema):
    ok = fields.Boolean(metadata={"description": "The engine answered its (cached) ping."})
    kind = fields.String(metadata={"description": "The runner: `docker` or `swarm` (`RUNNER`).", "example": "docker"})
    version = fields.String(allow_none=True, metadata={"description": "The engine's version.", "example": "28.2.2"})
    swarm = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        metadata={"optional": True, "description": "Swarm only: `{node_state, manager, nodes, managers, registry}`."},
    )
    error = fields.String(metadata={"optional": True, "description": "Why the engine is not `ok` (only then)."})


class SystemReconcilerSchema(ResponseSchema):
    leader = fields.Boolean(
        allow_none=True,
        metadata={
            "description": "Whether the reconciler this process runs leads; null: it runs none (a web worker "
            "beside `flask reconcile`)."
        },
    )
    holder = fields.String(allow_none=True, metadata={"description": "`host:pid` of the last pass's reconciler."})
    last_pass_at = fields.DateTime(allow_none=True)
    last_pass_seconds = fields.Float(allow_none=True, metadata={"description": "How long that pass took."})
    seconds_since_last_pass = fields.Float(allow_none=True)


class SystemDeploymentsSchema(ResponseSchema):
    by_status = fields.Dict(
        keys=fields.String(), values=fields.Integer(), metadata={"description": "Every status, with its count."}
    )


class SystemWebhooksSchema(ResponseSchema):
    pending = fields.Integer(metadata={"description": "Deliveries still to be sent or retried."})
    failed = fields.Integer(metadata={"description": "Deliveries whose last attempt failed."})


class SystemStatusSchema(ResponseSchema):
    """Whether the service's parts are healthy and current."""

    version = fields.String(metadata={"example": "1.1.0"})
    uptime_seconds = fields.Float(metadata={"description": "Since this process started."})
    database = fields.Nested(SystemDatabaseSchema)
    engine = fields.Nested(SystemEngineSchema)
    reconciler = fields.Nested(SystemReconcilerSchema)
    deployments = fields.Nested(SystemDeploymentsSchema)
    webhooks = fields.Nested(SystemWebhooksSchema)
