"""Users, their login sessions, and which account was made first.

A login creates an `AuthSession`; its id travels in both the access and the refresh token (`sid`).
Logging out revokes the session in the database, so both tokens stop working on every process at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from deploy_service.extensions import db
from deploy_service.models.types import UTCDateTime, new_id, utcnow


class Role(StrEnum):
    """What a user may do (the rights of each are `permissions.ROLE_ACTIONS`).

    An admin manages everything and everyone; a developer creates and manages its own agents,
    deployments, keys, secrets and webhooks; a user reads its own resources and calls `interact`.
    """

    ADMIN = "admin"
    DEVELOPER = "developer"
    USER = "user"


ROLE_ADMIN = Role.ADMIN
ROLE_DEVELOPER = Role.DEVELOPER
ROLE_USER = Role.USER
ROLES = tuple(Role)


class User(db.Model):  # type: ignore[name-defined]
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=ROLE_DEVELOPER)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    def __repr__(self) -> str:
        return f"<User {self.id} {self.role}>"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated user of a request, read with its login session in one Core query.

    A plain value, not an ORM object: authenticating every request through the ORM (identity map,
    attribute instrumentation) cost several times the query itself. Services take it as `actor` and use
    only its id and role; the routes that change a user load the `User` row themselves.
    """

    id: str
    email: str
    full_name: str | None
    role: str
    is_active: bool
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN


class AuthSession(db.Model):  # type: ignore[name-defined]
    """One login: the unit that logout revokes."""

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_user_id_expires_at", "user_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


FIRST_ACCOUNT_SLOT = 1


class FirstAccount(db.Model):  # type: ignore[name-defined]
    """The account made first, ever: at most one row, in slot 1, written with that account's insert.

    Whether a new account is the first decides whether registration makes it admin (outside production),
    so it must be decided by the database, not by counting users first: two first registrations both
    count zero. Both insert this row in the transaction of their user; the primary key lets exactly one
    commit (on SQLite and PostgreSQL alike), and the loser is made again as a later account. The row
    outlives its user (`SET NULL`), so removing the first account never makes the next one admin.
    """

    __tablename__ = "first_account"
    __table_args__ = (CheckConstraint(f"slot = {FIRST_ACCOUNT_SLOT}", name="one_row"),)

    slot: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, default=FIRST_ACCOUNT_SLOT)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
