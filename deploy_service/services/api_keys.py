"""Per-agent API keys: issue (shown once), list, revoke, and authenticate a presented key.

Authentication reads the database on every request (by the key's hash, a unique index, with its owner's
`is_active`), so a revoked or expired key, or a key of a deactivated user's agent, fails on the very next
request on every worker; there is no cache to outlive it.
`last_used_at` is written at most once per `API_KEY_LAST_USED_RESOLUTION_SECONDS` per key.
`verified_key` asks once per request: the rate limiter (which picks the key's bucket) and the view's
auth check share the answer, kept on `flask.g` for that request only. The read is a prepared one on the
request's raw connection (`rawdb`), not an ORM query: it is on the path of every call through `interact`,
before the agent's first byte (docs/performance.md); the key comes back as a transient `ApiKey`, which
the caller reads and never writes.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from flask import g
from sqlalchemy import bindparam, select

from deploy_service.errors import NotFound
from deploy_service.extensions import db
from deploy_service.models import SCOPES, ApiKey, Principal, User
from deploy_service.models.types import utcnow
from deploy_service.rawdb import PreparedQuery
from deploy_service.security import api_key_hash, api_key_well_formed, generate_api_key
from deploy_service.services.agents import get_agent
from deploy_service.services.common import Page, paginate, record_use

PREFIX_SHOWN = 12


def create_key(
    actor: Principal,
    agent_id: str,
    *,
    name: str | None = None,
    expires_in_days: int | None = None,
    scopes: list[str] | None = None,
) -> tuple[ApiKey, str]:
    """Issue a key for an agent the caller may manage; returns the row and the key (shown once)."""
    agent = get_agent(actor, agent_id)
    key = generate_api_key()
    now = utcnow()
    row = ApiKey(
        agent_id=agent.id,
        owner_id=agent.owner_id,
        name=name or f"key-{now:%Y%m%d%H%M%S}",
        prefix=key[:PREFIX_SHOWN],
        key_hash=api_key_hash(key),
        scopes=sorted(set(scopes or SCOPES)),
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.session.add(row)
    db.session.commit()
    return row, key


def list_keys(actor: Principal, agent_id: str, *, skip: int, limit: int) -> Page[ApiKey]:
    """The agent's keys, newest first (never the keys themselves)."""
    agent = get_agent(actor, agent_id)
    stmt = select(ApiKey).where(ApiKey.agent_id == agent.id).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    return paginate(stmt, skip=skip, limit=limit)


def revoke_key(actor: Principal, agent_id: str, key_id: str) -> ApiKey:
    """Revoke a key at once (idempotent).

    Raises:
        NotFound: no such key on an agent the caller may manage.
    """
    agent = get_agent(actor, agent_id)
    row = db.session.get(ApiKey, key_id)
    if row is None or row.agent_id != agent.id:
        raise NotFound("API key not found.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.session.commit()
    return row


_keys, _users = ApiKey.__table__, User.__table__
_KEY_COLUMNS = tuple(column.key for column in _keys.columns)
_KEY_AND_OWNER = PreparedQuery(
    select(*_keys.columns, _users.c.is_active)
    .join_from(_keys, _users, _keys.c.owner_id == _users.c.id)
    .where(_keys.c.key_hash == bindparam("key_hash"))
)


def authenticate(presented: str) -> ApiKey | None:
    """The live key matching `presented`, or None (malformed, unknown, revoked, expired, or its owner deactivated)."""
    if not api_key_well_formed(presented):
        return None
    digest = api_key_hash(presented)
    found = _KEY_AND_OWNER.first({"key_hash": digest})
    if found is None:
        return None
    *values, owner_active = found
    row = ApiKey(**dict(zip(_KEY_COLUMNS, values, strict=True)))
    if not owner_active or not hmac.compare_digest(row.key_hash, digest):
        return None
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if record_use(ApiKey, row.id, row.last_used_at, now):
        row.last_used_at = now
    return row


def verified_key(presented: str) -> ApiKey | None:
    """`authenticate(presented)`, asked at most once per request (the answer, a key or None, kept on `flask.g`)."""
    checked: tuple[str, ApiKey | None] | None = g.get("_verified_api_key")
    if checked is not None and hmac.compare_digest(checked[0], presented):
        return checked[1]
    key = authenticate(presented)
    g._verified_api_key = (presented, key)
    return key
