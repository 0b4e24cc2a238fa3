"""Per-agent API keys, stored only as a keyed hash; and the record of every call made through them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow


class ApiKeyScope(StrEnum):
    """What an agent's API key may do: call the agent, report telemetry, add and read results."""

    INVOKE = "invoke"
    TELEMETRY = "telemetry"
    RESULTS = "results"


SCOPE_INVOKE = ApiKeyScope.INVOKE
SCOPE_TELEMETRY = ApiKeyScope.TELEMETRY
SCOPE_RESULTS = ApiKeyScope.RESULTS
SCOPES = tuple(ApiKeyScope)


class ApiKey(db.Model):  # type: ignore[name-defined]
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_agent_id_created_at", "agent_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the key, shown in lists so a user can tell keys apart."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InvocationStatus(StrEnum):
    """How an invocations list filters calls: `error` is what the error rate counts (a status of 500 or more)."""

    OK = "ok"
    ERROR = "error"


class Invocation(db.Model):  # type: ignore[name-defined]
    """One call to a deployed agent through `interact`: counts, errors, latencies and sizes, never the bodies.

    Rows older than `INVOCATION_RETENTION_DAYS` are deleted by the reconciler's `PruneInvocationsJob`.
    """

    __tablename__ = "invocations"
    __table_args__ = (
        Index("ix_invocations_agent_id_created_at", "agent_id", "created_at"),
        Index("ix_invocations_deployment_id_created_at", "deployment_id", "created_at"),
        Index("ix_invocations_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    replica: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column()
    latency_ms: Mapped[float] = mapped_column(Float)
    """From the call's start to the answer's last byte (for a stream: to its end)."""
    session_id: Mapped[str | None] = mapped_column(String(200))
    streamed: Mapped[bool] = mapped_column(default=False, server_default=false())
    first_byte_ms: Mapped[float | None] = mapped_column(Float)
    """From the call's start to the agent's first byte: its answer's head (JSON), its first chunk of body (a stream)."""
    request_bytes: Mapped[int | None] = mapped_column(Integer)
    response_bytes: Mapped[int | None] = mapped_column(Integer)
    """Bytes of the agent's answer passed to the caller (null: no answer came)."""
    error: Mapped[str | None] = mapped_column(String(500))
    """The call's failure (`agent_timeout: ...`), when the caller got the service's error rather than the agent's."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
