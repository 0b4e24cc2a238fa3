"""Secrets: stored encrypted, listed by name, rotated in place, resolved to plain values only for container start."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from deploy_service.errors import Conflict, NotFound
from deploy_service.extensions import db
from deploy_service.models import Agent, Principal, Secret
from deploy_service.models.types import utcnow
from deploy_service.references import DOCKER_HUB, image_registry
from deploy_service.runner.base import RegistryCredentials
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


@dataclass(frozen=True)
class SecretDetail:
    """A secret's metadata with the agents that reference it (`used_by`)."""

    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    version: int
    used_by: list[str]


def _visible_secret(actor: Principal, secret_id: str) -> Secret:
    secret = db.session.get(Secret, secret_id)
    if secret is None or (not actor.is_admin and secret.owner_id != actor.id):
        raise NotFound("Secret not found.")
    return secret


def _references(secret: Secret) -> tuple[list[str], list[str]]:
    """The ids of the owner's agents that inject the secret, and of those that log in to a registry with it."""
    agents = list(
        db.session.scalars(select(Agent).where(Agent.owner_id == secret.owner_id).order_by(Agent.created_at, Agent.id))
    )
    injected = [agent.id for agent in agents if secret.name in (agent.secrets or {}).values()]
    logins = [agent.id for agent in agents if (agent.registry_auth or {}).get("password_secret") == secret.name]
    return injected, logins


def _detail(secret: Secret) -> SecretDetail:
    injected, logins = _references(secret)
    used_by = injected + [agent_id for agent_id in logins if agent_id not in injected]
    return SecretDetail(secret.id, secret.name, secret.created_at, secret.updated_at, secret.version, used_by)


def get_secret(actor: Principal, secret_id: str) -> SecretDetail:
    """A secret's metadata and the agents that reference it; never its value.

    Raises:
        NotFound: no such secret visible to the caller.
    """
    return _detail(_visible_secret(actor, secret_id))


def rotate_secret(actor: Principal, secret_id: str, *, value: str) -> SecretDetail:
    """Replace a secret's value in place (its `version` goes up).

    Nothing running is touched: each agent in `used_by` gets the new value from its next container start,
    restart or release (a restart after a rotation is a new release whose `changes` say `rotated`).

    Raises:
        NotFound: no such secret visible to the caller.
    """
    secret = _visible_secret(actor, secret_id)
    secret.ciphertext = encrypt_secret(value)
    secret.version = (secret.version or 1) + 1
    secret.updated_at = utcnow()
    db.session.commit()
    return _detail(secret)


def secret_versions(owner_id: str, names: Iterable[str]) -> dict[str, int]:
    """`{secret name: version}` of the owner's secrets among `names` (what a release records)."""
    wanted = set(names)
    if not wanted:
        return {}
    rows = db.session.execute(
        select(Secret.name, Secret.version).where(Secret.owner_id == owner_id, Secret.name.in_(wanted))
    )
    return {name: version for name, version in rows}


def delete_secret(actor: Principal, secret_id: str) -> None:
    """Delete a secret that no agent references (in `secrets` or as its `registry_auth.password_secret`).

    A registry password in use is refused like an injected secret, rather than left to fail the agent's next
    pull: the owner learns now, from the request that would break it, which agents to change first.

    Raises:
        NotFound: no such secret visible to the caller.
        Conflict: agents still reference it (`details.agent_ids`).
    """
    secret = _visible_secret(actor, secret_id)
    injected, logins = _references(secret)
    if injected or logins:
        where = " and ".join(
            part
            for part, found in (("in their secrets", injected), ("as their registry_auth.password_secret", logins))
            if found
        )
        raise Conflict(
            f"The secret is referenced by agents ({where}); remove the references first.",
            details={"agent_ids": injected + [agent_id for agent_id in logins if agent_id not in injected]},
        )
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


def registry_credentials(
    owner_id: str, registry_auth: dict[str, str] | None, *, image: str | None
) -> RegistryCredentials | None:
    """An agent's `registry_auth` with its password decrypted, for the runner (for a pull, a build or a service).

    The registry is the stored one, else the image's (an image agent), else Docker Hub (a git agent's build).

    Raises:
        NotFound: the password's secret no longer exists.
    """
    if not registry_auth:
        return None
    name = registry_auth["password_secret"]
    secret = db.session.scalar(select(Secret).where(Secret.owner_id == owner_id, Secret.name == name))
    if secret is None:
        raise NotFound(f"The registry_auth password secret {name!r} does not exist.", details={"secrets": [name]})
    registry = registry_auth.get("registry") or (image_registry(image) if image else DOCKER_HUB)
    return RegistryCredentials(
        registry=registry, username=registry_auth["username"], password=decrypt_secret(secret.ciphertext)
    )
