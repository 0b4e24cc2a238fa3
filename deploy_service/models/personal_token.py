"""Personal access tokens: a user's credential for scripts, CI and the CLI, stored only as a keyed hash.

A token acts as its user within its scopes (`TokenScope`), never beyond the user's role: what each scope
opens is `permissions.TOKEN_SCOPE_ACTIONS`. Tokens look like agent keys with another prefix (`dsp_`,
`security.generate_api_key`), and only HMAC-SHA256(pepper, token) is kept.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import JSONType, UTCDateTime, new_id, utcnow


class TokenScope(StrEnum):
    """What a personal token may do: read (every GET), write (create/update/delete), deploy (roll out)."""

    READ = "read"
    WRITE = "write"
    DEPLOY = "deploy"


class PersonalToken(db.Model):  # type: ignore[name-defined]
    __tablename__ = "personal_tokens"
    __table_args__ = (Index("ix_personal_tokens_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the token, shown in lists so a user can tell tokens apart."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
