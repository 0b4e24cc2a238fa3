"""Registration, login sessions and the token checks every authenticated request relies on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from deploy_service.errors import Conflict, Forbidden, Unauthorized
from deploy_service.extensions import db
from deploy_service.models import ROLE_ADMIN, ROLE_USER, AuthSession, User
from deploy_service.models.types import utcnow
from deploy_service.security import hash_password, password_needs_rehash, verify_password


def _access_token_seconds() -> int:
    expires: timedelta = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    return int(expires.total_seconds())


def create_user(*, email: str, password: str, full_name: str | None = None, role: str | None = None) -> User:
    """Create a user; the first user ever becomes admin unless a role is given.

    Raises:
        Conflict: the email is taken.
    """
    email = email.strip().lower()
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise Conflict("A user with this email already exists.", details={"email": email})
    if role is None:
        role = ROLE_ADMIN if not db.session.scalar(select(func.count()).select_from(User)) else ROLE_USER
    user = User(email=email, full_name=full_name, password_hash=hash_password(password), role=role)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict("A user with this email already exists.", details={"email": email}) from exc
    return user


def register(*, email: str, password: str, full_name: str | None = None) -> User:
    """Self-service registration.

    Raises:
        Forbidden: registration is disabled by configuration.
        Conflict: the email is taken.
    """
    if not current_app.config["REGISTRATION_ENABLED"]:
        raise Forbidden("Registration is disabled.")
    return create_user(email=email, password=password, full_name=full_name)


def login(*, email: str, password: str) -> dict[str, Any]:
    """Check credentials and open a session; returns the token body.

    Raises:
        Unauthorized: unknown email, wrong password or inactive user (one message for all).
    """
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if not verify_password(user.password_hash if user else None, password) or user is None or not user.is_active:
        raise Unauthorized("Invalid email or password.")
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    now = utcnow()
    db.session.execute(delete(AuthSession).where(AuthSession.user_id == user.id, AuthSession.expires_at < now))
    session = AuthSession(user_id=user.id, expires_at=now + current_app.config["JWT_REFRESH_TOKEN_EXPIRES"])
    db.session.add(session)
    db.session.commit()
    claims = {"sid": session.id}
    return {
        "access_token": create_access_token(identity=user.id, additional_claims=claims),
        "refresh_token": create_refresh_token(identity=user.id, additional_claims=claims),
        "token_type": "bearer",
        "expires_in": _access_token_seconds(),
    }


def refresh(*, user: User, session_id: str) -> dict[str, Any]:
    """A new access token in the same session (the refresh token was checked by the caller)."""
    return {
        "access_token": create_access_token(identity=user.id, additional_claims={"sid": session_id}),
        "token_type": "bearer",
        "expires_in": _access_token_seconds(),
    }


def logout(*, session_id: str) -> None:
    """Revoke the session: its access and refresh tokens stop working on every process."""
    session = db.session.get(AuthSession, session_id)
    if session is not None and session.revoked_at is None:
        session.revoked_at = utcnow()
        db.session.commit()


def user_for_token(payload: dict[str, Any]) -> User | None:
    """The active user a decoded token speaks for, or None when its session is revoked or gone.

    One query per request: the session and its user are read together.
    """
    session_id, user_id = payload.get("sid"), payload.get("sub")
    if not isinstance(session_id, str) or not isinstance(user_id, str):
        return None
    row = db.session.execute(
        select(User, AuthSession.revoked_at)
        .join(AuthSession, AuthSession.user_id == User.id)
        .where(AuthSession.id == session_id, User.id == user_id)
    ).first()
    if row is None:
        return None
    user, revoked_at = row
    if revoked_at is not None or not user.is_active:
        return None
    return user
