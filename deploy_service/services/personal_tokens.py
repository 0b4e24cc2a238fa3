"""Personal access tokens: issue (shown once), list, revoke, and authenticate a presented token.

A token acts as its user, within its scopes and never beyond the user's role (`permissions`). It is
checked against the database on every request (its hash is a unique index, read together with its user
in one prepared query), so a revoked or expired token, or one whose user was deactivated, fails on the
very next request of every worker. `last_used_at` is written at most once per
`API_KEY_LAST_USED_RESOLUTION_SECONDS` per token, not on every request. `verified_token` asks once per
request: the rate limiter (which buckets by token) and the auth check share the answer on `flask.g`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta

from flask import g
from sqlalchemy import bindparam, select, update
from werkzeug.datastructures import Headers

from deploy_service.errors import Forbidden, NotFound
from deploy_service.extensions import db
from deploy_service.models import PersonalToken, Principal, TokenScope, User
from deploy_service.models.types import utcnow
from deploy_service.permissions import token_scopes_for_role
from deploy_service.rawdb import PreparedQuery
from deploy_service.security import PERSONAL_TOKEN_PREFIX, api_key_hash, api_key_well_formed, generate_api_key
from deploy_service.services.common import Page, paginate, record_use

PREFIX_SHOWN = 12
API_KEY_HEADER = "X-API-Key"
DEFAULT_SCOPES = (TokenScope.READ,)


@dataclass(frozen=True, slots=True)
class TokenCaller:
    """A request authenticated by a personal token: its user, the token's id and its scopes."""

    user: Principal
    token_id: str
    scopes: tuple[str, ...]


def create_token(
    actor: Principal, *, name: str, scopes: list[str] | None = None, expires_in_days: int | None = None
) -> tuple[PersonalToken, str]:
    """Issue a token for the caller; returns the row and the token (shown once).

    Raises:
        Forbidden: a scope the caller's role does not allow (`details.scopes` names the allowed ones).
    """
    wanted = sorted(set(scopes or DEFAULT_SCOPES))
    allowed = token_scopes_for_role(actor.role)
    beyond = [scope for scope in wanted if scope not in allowed]
    if beyond:
        raise Forbidden(
            f"Your role ({actor.role}) cannot give a token the scopes {', '.join(beyond)}.",
            details={"scopes": [str(scope) for scope in allowed]},
        )
    token = generate_api_key(PERSONAL_TOKEN_PREFIX)
    now = utcnow()
    row = PersonalToken(
        user_id=actor.id,
        name=name,
        prefix=token[:PREFIX_SHOWN],
        key_hash=api_key_hash(token),
        scopes=wanted,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.session.add(row)
    db.session.commit()
    return row, token


def list_tokens(actor: Principal, *, skip: int, limit: int) -> Page[PersonalToken]:
    """The caller's tokens, newest first (never the tokens themselves)."""
    stmt = (
        select(PersonalToken)
        .where(PersonalToken.user_id == actor.id)
        .order_by(PersonalToken.created_at.desc(), PersonalToken.id.desc())
    )
    return paginate(stmt, skip=skip, limit=limit)


def revoke_token(actor: Principal, token_id: str) -> PersonalToken:
    """Revoke one of the caller's tokens at once (idempotent).

    Raises:
        NotFound: no such token of the caller's.
    """
    row = db.session.get(PersonalToken, token_id)
    if row is None or row.user_id != actor.id:
        raise NotFound("Token not found.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.session.commit()
    return row


def revoke_all_of(user_id: str) -> None:
    """Revoke every live token of a user (in the caller's transaction: deactivation commits it)."""
    db.session.execute(
        update(PersonalToken)
        .where(PersonalToken.user_id == user_id, PersonalToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


_tokens = PersonalToken.__table__
_users = User.__table__
_TOKEN_AND_USER = PreparedQuery(
    select(
        _tokens.c.id,
        _tokens.c.key_hash,
        _tokens.c.scopes,
        _tokens.c.expires_at,
        _tokens.c.revoked_at,
        _tokens.c.last_used_at,
        _users.c.id,
        _users.c.email,
        _users.c.full_name,
        _users.c.role,
        _users.c.is_active,
        _users.c.created_at,
    )
    .join_from(_tokens, _users, _tokens.c.user_id == _users.c.id)
    .where(_tokens.c.key_hash == bindparam("key_hash"))
)


def authenticate(presented: str) -> TokenCaller | None:
    """The caller a live token speaks for, or None (malformed, unknown, revoked, expired, user inactive)."""
    if not api_key_well_formed(presented, PERSONAL_TOKEN_PREFIX):
        return None
    digest = api_key_hash(presented)
    row = _TOKEN_AND_USER.first({"key_hash": digest})
    if row is None:
        return None
    token_id, key_hash, scopes, expires_at, revoked_at, last_used_at, *user = row
    if not hmac.compare_digest(key_hash, digest):
        return None
    now = utcnow()
    user_id, email, full_name, role, is_active, created_at = user
    if revoked_at is not None or (expires_at is not None and expires_at <= now) or not is_active:
        return None
    record_use(PersonalToken, token_id, last_used_at, now)
    principal = Principal(
        id=user_id, email=email, full_name=full_name, role=role, is_active=is_active, created_at=created_at
    )
    return TokenCaller(user=principal, token_id=token_id, scopes=tuple(scopes or ()))


def presented_token(headers: Headers) -> str | None:
    """The personal token a request authenticates with, valid or not: `Authorization: Bearer dsp_...`, or
    `X-API-Key: dsp_...` when no `Authorization` is sent (the header that authenticates is the same as for
    every other credential: `Authorization` first)."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        if PERSONAL_TOKEN_PREFIX not in authorization:  # the common case (a JWT), at the cost of one scan
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        return token if scheme == "Bearer" and token.startswith(PERSONAL_TOKEN_PREFIX) else None
    presented = headers.get(API_KEY_HEADER)
    return presented if presented is not None and presented.startswith(PERSONAL_TOKEN_PREFIX) else None


def verified_token(presented: str) -> TokenCaller | None:
    """`authenticate(presented)`, asked at most once per request (the answer kept on `flask.g`)."""
    checked: tuple[str, TokenCaller | None] | None = g.get("_verified_personal_token")
    if checked is not None and hmac.compare_digest(checked[0], presented):
        return checked[1]
    caller = authenticate(presented)
    g._verified_personal_token = (presented, caller)
    return caller
