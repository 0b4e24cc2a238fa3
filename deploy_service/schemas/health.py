"""Bodies of the health routes: liveness, the database check and readiness with each of its checks.

A check that fails says why in `error` and leaves out the figures it could not take, so those fields
are optional; a check skipped because the one it depends on failed is `{"status": "skipped"}`.
"""

from __future__ import annotations

from marshmallow import fields

from deploy_service.models.heartbeat import CheckStatus
from deploy_service.schemas.common import Choice, ResponseSchema

_OPTIONAL = {"optional": True}


def _error() -> fields.String:
    return fields.String(metadata={**_OPTIONAL, "description": "Why the check failed; only when it did."})


class LivenessSchema(ResponseSchema):
    """The process answers."""

    status = Choice(CheckStatus, metadata={"description": "Always `ok`."})
    version = fields.String(metadata={"example": "1.4.0"})
    uptime_seconds = fields.Float(metadata={"description": "Since this process started."})


class DatabaseCheckSchema(ResponseSchema):
    """`SELECT 1` against the database."""

    status = Choice(CheckStatus)
    backend = fields.String(metadata={"description": "The SQLAlchemy dialect.", "example": "postgresql"})
    latency_ms = fields.Float(metadata={**_OPTIONAL, "description": "Only when the query succeeded."})
    error = _error()


class MigrationsCheckSchema(ResponseSchema):
    """Whether the database schema is at the migrations' head."""

    status = Choice(CheckStatus)
    current = fields.List(fields.String(), metadata={**_OPTIONAL, "description": "The database's revisions."})
    head = fields.List(fields.String(), metadata={**_OPTIONAL, "description": "The migration scripts' heads."})
    error = _error()


class EngineCheckSchema(ResponseSchema):
    """A ping of the container engine (reused for `HEALTH_ENGINE_CACHE_SECONDS`)."""

    status = Choice(CheckStatus)
    runner = fields.String(metadata={"example": "docker"})
    latency_ms = fields.Float(metadata={**_OPTIONAL, "description": "Only when the engine answered."})
    error = _error()


class ReconcilerCheckSchema(ResponseSchema):
    """Whether a reconciler completed a pass within `RECONCILER_STALE_SECONDS`."""

    status = Choice(CheckStatus)
    last_pass_at = fields.String(
        allow_none=True,
        metadata={**_OPTIONAL, "format": "date-time", "description": "Null before the first pass."},
    )
    stale_seconds = fields.Float(metadata={**_OPTIONAL, "description": "`RECONCILER_STALE_SECONDS`."})
    error = _error()


class ReadinessChecksSchema(ResponseSchema):
    """Each readiness check's result."""

    database = fields.Nested(DatabaseCheckSchema)
    migrations = fields.Nested(MigrationsCheckSchema)
    engine = fields.Nested(EngineCheckSchema)
    reconciler = fields.Nested(ReconcilerCheckSchema)


class ReadinessSchema(ResponseSchema):
    """`ok` when every check is `ok`, else `error`."""

    status = Choice(CheckStatus)
    checks = fields.Nested(ReadinessChecksSchema)
