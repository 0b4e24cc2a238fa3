"""Registration, login sessions and the token checks every authenticated request relies on."""

from __future__ import annotations

from typing import Any

from flask_jwt_extended import create_access_token, create_refresh_token
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from deploy_service.errors import Conflict, Forbidden, Unauthorized
from deploy_service.extensions import db
from deploy_service.models import (
    FIRST_ACCOUNT_SLOT,
    ROLE_ADMIN,
    AuthSession,
    FirstAccount,
    Principal,
    Role,
    User,
)
from deploy_service.models.types import utcnow
from deploy_service.rawdb import PreparedQuery
from deploy_service.security import hash_password, password_needs_rehash, verify_password
from deploy_service.settings import current_settings
from deploy_service.tokens import TokenRejected, bearer_token, decode_access_token


def _access_token_seconds() -> int:
    expires = current_settings().auth.access_token_expires
    return int(expires.total_seconds())


def registered_role(*, first: bool) -> Role:
    """The role registration gives: admin to the first account ever, outside production only; else `DEFAULT_ROLE`.

    In production the admin is made by `flask create-admin`, so opening registration never hands the
    service to whoever registers first after go-live.
    """
    settings = current_settings()
    return ROLE_ADMIN if first and not settings.production else Role(settings.auth.default_role)


def create_user(*, email: str, password: str, full_name: str | None = None, role: str | None = None) -> User:
    """Create a user with `role`, or without one the role registration gives (`registered_role`).

    Whether the account is the first ever is settled by the database (`FirstAccount`): an account that
    finds the slot free claims it in its own transaction, and when another claimed it meanwhile (two
    first registrations at once) the transaction is rolled back and the account made again as a later one.

    Raises:
        Conflict: the email is taken.
    """
    email = email.strip().lower()
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise _email_taken(email)
    password_hash = hash_password(password)
    first = db.session.get(FirstAccount, FIRST_ACCOUNT_SLOT) is None
    try:
        return _insert_user(email, password_hash, full_name, role, first=first)
    except IntegrityError as exc:
        db.session.rollback()
        if not first:
            raise _email_taken(email) from exc
    try:  # the first account was claimed meanwhile (or the email taken: then this fails too)
        return _insert_user(email, password_hash, full_name, role, first=False)
    except IntegrityError as exc:
        db.session.rollback()
        raise _email_taken(email) from exc


def _insert_user(email: str, password_hash: str, full_name: str | None, role: str | None, *, first: bool) -> User:
    user = User(
        email=email, full_name=full_name, password_hash=password_hash, role=role or registered_role(first=first)
    )
    db.session.add(user)
    if first:
        db.session.flush()  # the user's row before the row that names it
        db.session.add(FirstAccount(slot=FIRST_ACCOUNT_SLOT, user_id=user.id))
    db.session.commit()
    return user


def _email_taken(email: str) -> Conflict:
    return Conflict("A user with this email already exists.", details={"email": email})


def register(*, email: str, password: str, full_name: str | None = None) -> User:
    """Self-service registration.

    Raises:
        Forbidden: registration is disabled by configuration.
        Conflict: the email is taken.
    """
    if not current_settings().auth.registration_enabled:
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
    session = AuthSession(user_id=user.id, expires_at=now + current_settings().auth.refresh_token_expires)
    db.session.add(session)
    db.session.commit()
    claims = {"sid": session.id}
    return {
        "access_token": create_access_token(identity=user.id, additional_claims=claims),
        "refresh_token": create_refresh_token(identity=user.id, additional_claims=claims),
        "token_type": "bearer",
        "expires_in": _access_token_seconds(),
    }


def refresh(*, user: Principal, session_id: str) -> dict[str, Any]:
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


def authenticate_access(header: str | None) -> tuple[Principal, dict[str, Any]]:
    """The user and the verified claims of a request's bearer access token: one decode and one query.

    Raises:
        Unauthorized: no usable token, or its session is revoked or gone, or its user deactivated.
    """
    try:
        payload = decode_access_token(bearer_token(header), current_settings().auth.tokens)
    except TokenRejected as exc:
        raise Unauthorized(exc.message) from exc
    user = user_for_token(payload)
    if user is None:
        raise Unauthorized("The token has been revoked.")
    return user, payload


_users = User.__table__
_sessions = AuthSession.__table__
_USER_COLUMNS = (
    _users.c.id,
    _users.c.email,
    _users.c.full_name,
    _users.c.role,
    _users.c.is_active,
    _users.c.created_at,
)

_USER_OF_SESSION = PreparedQuery(
    select(*_USER_COLUMNS, _sessions.c.revoked_at)
    .join_from(_sessions, _users, _sessions.c.user_id == _users.c.id)
    .where(_sessions.c.id == bindparam("session_id"), _users.c.id == bindparam("user_id"))
)


def user_for_token(payload: dict[str, Any]) -> Principal | None:
    """The active user a decoded token speaks for, or None when its session is revoked or gone.

    One prepared query per request (the session and its user together) on the request's pooled
    connection (`rawdb`); a revoked session is seen on the very next request of every process.
    """
    session_id, user_id = payload.get("sid"), payload.get("sub")
    if not isinstance(session_id, str) or not isinstance(user_id, str):
        return None
    row = _USER_OF_SESSION.first({"session_id": session_id, "user_id": user_id})
    if row is None:
        return None
    user_id, email, full_name, role, is_active, created_at, revoked_at = row
    if revoked_at is not None or not is_active:
        return None
    return Principal(
        id=user_id, email=email, full_name=full_name, role=role, is_active=is_active, created_at=created_at
    )
