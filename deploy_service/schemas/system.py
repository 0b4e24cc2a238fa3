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
