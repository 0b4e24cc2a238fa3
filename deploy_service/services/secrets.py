"""Secrets: stored encrypted, listed by name, resolved to plain values only for container start."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from deploy_service.errors import Conflict, NotFound
from deploy_service.extensions import db
from deploy_service.models import Agent, Principal, Secret
from deploy_service.security import decrypt_secret, encrypt_secret
from deploy_service.services.common import Page, paginate, scope_to_owner


def list_secrets(actor: Principal, *, skip: int, limit: int) -> Page[Secret]:
    """The caller's secrets (an admin sees all), by name."""
    stmt = scope_to_owner(select(Secret), Secret.owner_id, actor).order_by(Secret.name, Secret.id)
    return paginate(stmt, skip=skip, limit=limit)


def create_secret(actor: Principal, *, name: str, value: str) -> Secret:
    """Store a new secret for `actor`.

    Raises:
        Conflict: the caller already has a secret with this name.
    """
    if db.session.scalar(select(Secret.id).where(Secret.owner_id == actor.id, Secret.name == name)):
        raise Conflict("A secret with this name already exists.", details={"name": name})
    secret = Secret(owner_id=actor.id, name=name, ciphertext=encrypt_secret(value))
    db.session.add(secret)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict("A secret with this name already exists.", details={"name": name}) from exc
    return secret


def delete_secret(actor: Principal, secret_id: str) -> None:
    """Delete a secret that no agent references.

    Raises:
        NotFound: no such secret visible to the caller.
        Conflict: agents still reference it (`details.agent_ids`).
    """
    secret = db.session.get(Secret, secret_id)
    if secret is None or (not actor.is_admin and secret.owner_id != actor.id):
        raise NotFound("Secret not found.")
    users = [
        agent.id
        for agent in db.session.scalars(select(Agent).where(Agent.owner_id == secret.owner_id))
        if secret.name in (agent.secrets or {}).values()
    ]
    if users:
        raise Conflict("The secret is referenced by agents; remove the references first.", details={"agent_ids": users})
    db.session.delete(secret)
    db.session.commit()


def missing_secret_names(owner_id: str, names: Iterable[str]) -> list[str]:
    """Which of `names` the owner has no secret for."""
    wanted = set(names)
    if not wanted:
        return []
    found = set(db.session.scalars(select(Secret.name).where(Secret.owner_id == owner_id, Secret.name.in_(wanted))))
    return sorted(wanted - found)


def resolve_secret_values(owner_id: str, references: dict[str, str]) -> dict[str, str]:
    """Decrypt the secrets an agent references: `{ENV_NAME: value}` (for container start only).

    Raises:
        NotFound: a referenced secret no longer exists.
    """
    if not references:
        return {}
    rows = db.session.scalars(
        select(Secret).where(Secret.owner_id == owner_id, Secret.name.in_(set(references.values())))
    ).all()
    by_name = {secret.name: secret for secret in rows}
    missing = sorted({name for name in references.values() if name not in by_name})
    if missing:
        raise NotFound("Referenced secrets do not exist.", details={"secrets": missing})
    return {env: decrypt_secret(by_name[name].ciphertext) for env, name in references.items()}
