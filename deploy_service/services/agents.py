"""Agents: create, read, update, delete and list, scoped to their owner (admins see all)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from deploy_service.errors import Conflict, NotFound, ValidationFailed
from deploy_service.extensions import db
from deploy_service.models import (
    DEFAULT_RESTART_POLICY,
    Agent,
    AgentKind,
    ApiKey,
    Deployment,
    DeploymentStatus,
    Principal,
)
from deploy_service.references import DOCKER_HUB, image_registry
from deploy_service.services import quotas
from deploy_service.services.common import Page
from deploy_service.services.secrets import missing_secret_names
from deploy_service.settings import current_settings

SOURCE_DEFAULTS = {"branch": "main", "dockerfile": "Dockerfile", "context": "."}
HEALTH_CHECK_DEFAULTS = {"path": "/health", "interval_seconds": 10.0, "timeout_seconds": 5.0, "retries": 3}


def _resources_with_defaults(resources: dict[str, Any] | None) -> dict[str, Any]:
    agents = current_settings().agents
    merged: dict[str, Any] = {"cpu": agents.default_cpu, "memory_mb": agents.default_memory_mb}
    merged.update(resources or {})
    return merged


def _with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill the defaults of the nested objects that were given (`health_check: {}` is every default)."""
    if data.get("source"):
        data["source"] = {**SOURCE_DEFAULTS, **data["source"]}
    if data.get("health_check") is not None:
        data["health_check"] = {**HEALTH_CHECK_DEFAULTS, **data["health_check"]}
    if "resources" in data:
        data["resources"] = _resources_with_defaults(data["resources"])
    return data


def _run_fields(data: dict[str, Any], agent: Agent | None = None) -> dict[str, Any]:
    """`kind`, `restart_policy` and `timeout_seconds` as they are stored after `data` is applied to `agent`
    (None: a new agent). A policy left out is the kind's default; a kind changed moves a policy that was the
    old kind's default to the new one's.

    Raises:
        Conflict: the change would leave a service with a timeout (only a job has one).
    """
    old_kind = agent.kind if agent is not None else AgentKind.SERVICE
    kind = data.get("kind", old_kind)
    if "restart_policy" not in data:
        if agent is None or agent.restart_policy == DEFAULT_RESTART_POLICY[old_kind]:
            data["restart_policy"] = DEFAULT_RESTART_POLICY[kind]
    timeout = data.get("timeout_seconds", agent.timeout_seconds if agent is not None else None)
    if kind == AgentKind.SERVICE and timeout is not None:
        raise Conflict(
            "This change would leave a service with a timeout; only a job has one (send timeout_seconds: null).",
            details={"timeout_seconds": ["Only a job (kind `job`) has a timeout."]},
        )
    return data


def _check_secret_references(
    owner_id: str, references: dict[str, str], *, error: type[NotFound | Conflict] = NotFound
) -> None:
    """Every secret the agent names exists among the owner's secrets.

    Raises:
        NotFound: a named secret does not exist (a reference to a missing resource, not malformed input);
            `details.secrets` maps each variable to what is missing.
        Conflict: the same, as `error=Conflict`: on an existing agent's own URL a 404 would say that the
            agent is gone, so there the missing secret is the state that conflicts with the change.
    """
    missing = set(missing_secret_names(owner_id, references.values()))
    if missing:
        unknown = {variable: f"No secret named {name!r}." for variable, name in references.items() if name in missing}
        first = next(iter(unknown.values()))
        raise error(first if len(unknown) == 1 else "Referenced secrets do not exist.", details={"secrets": unknown})


def _registry_auth(owner_id: str, registry_auth: dict[str, Any] | None, *, image: str | None) -> dict[str, Any] | None:
    """The agent's `registry_auth` as stored (`registry` lower case, null when not given), checked against its
    owner's secrets and its image.

    Raises:
        ValidationFailed: `password_secret` names no secret of the owner, or `registry` is not the image's registry
            (`details.registry_auth` names the field).
    """
    if registry_auth is None:
        return None
    registry = (registry_auth.get("registry") or "").lower() or None
    stored = {
        "username": registry_auth["username"],
        "password_secret": registry_auth["password_secret"],
        "registry": DOCKER_HUB if registry == "index.docker.io" else registry,
    }
    if missing_secret_names(owner_id, [stored["password_secret"]]):
        name = stored["password_secret"]
        raise ValidationFailed(
            f"No secret named {name!r} for registry_auth.password_secret.",
            details={"registry_auth": {"password_secret": [f"No secret named {name!r}."]}},
        )
    if image and stored["registry"]:
        wanted, given = image_registry(image), stored["registry"]
        if given != wanted:
            raise ValidationFailed(
                f"registry_auth is for {given}, but the image comes from {wanted}.",
                details={"registry_auth": {"registry": [f"Must be the image's registry ({wanted}) or null."]}},
            )
    return stored


def _commit_or_conflict(name: str) -> None:
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict("You already have an agent with this name.", details={"name": name}) from exc


def _name_taken(owner_id: str, name: str, *, exclude_id: str | None = None) -> bool:
    stmt = select(Agent.id).where(Agent.owner_id == owner_id, Agent.name == name)
    if exclude_id:
        stmt = stmt.where(Agent.id != exclude_id)
    return db.session.scalar(stmt) is not None


def get_agent(actor: Principal, agent_id: str) -> Agent:
    """An agent the caller may see.

    Raises:
        NotFound: it does not exist or belongs to someone else (the same answer for both).
    """
    agent = db.session.get(Agent, agent_id)
    if agent is None or (not actor.is_admin and agent.owner_id != actor.id):
        raise NotFound("Agent not found.")
    return agent


def agent_for_caller(caller: Principal | ApiKey, agent_id: str | None) -> Agent:
    """The agent a request may act on: any visible to a user, or exactly the agent of an API key.

    A key needs no `agent_id` (it names its agent); a user must give one.

    Raises:
        NotFound: not visible, or a key used for another agent.
        NotFound: also when a user gave no `agent_id`: no agent was named, so none is found.
    """
    if isinstance(caller, ApiKey):
        agent = db.session.get(Agent, caller.agent_id) if agent_id in (None, caller.agent_id) else None
        if agent is None:
            raise NotFound("Agent not found.")
        return agent
    if not agent_id:
        raise NotFound(
            "Name the agent: evaluations posted with a user token need `agent_id`.",
            details={"agent_id": ["Missing."]},
        )
    return get_agent(caller, agent_id)


def add_agent(actor: Principal, data: dict[str, Any]) -> Agent:
    """An agent owned by the caller, checked and added to the session; the caller flushes and commits.

    `data` is what `AgentInputSchema` loaded. This is the one place an agent is made: by `POST /v1/agents`
    (`create_agent`), and by a deploy straight from a repository or an image, which adds its deployment in
    the same transaction.

    Raises:
        NotFound: it references secrets the caller does not have.
        ValidationFailed: `registry_auth` names a secret the caller does not have, or a registry that is not
            the image's.
        Conflict: the caller already has an agent with this name.
        QuotaExceeded: the caller already owns `QUOTA_AGENTS` agents (admins are exempt).
    """
    data = _run_fields(_with_defaults(dict(data)))
    data.setdefault("resources", _resources_with_defaults(None))
    _check_secret_references(actor.id, data.get("secrets") or {})
    data["registry_auth"] = _registry_auth(actor.id, data.get("registry_auth"), image=data.get("image"))
    if _name_taken(actor.id, data["name"]):
        raise Conflict("You already have an agent with this name.", details={"name": data["name"]})
    quotas.check_new_agent(actor, actor.id)
    agent = Agent(owner_id=actor.id, **data)
    db.session.add(agent)
    return agent


def create_agent(actor: Principal, data: dict[str, Any]) -> Agent:
    """Register an agent owned by the caller (see `add_agent` for what is checked, and the errors)."""
    agent = add_agent(actor, data)
    _commit_or_conflict(agent.name)
    return agent


_NAME_JUNK = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 100


def default_name(data: dict[str, Any]) -> str:
    """The name of an agent made by a deploy that gave none: `<repo>-<branch>` for a git source,
    `<image name>-<tag>` for an image (`latest` without one); characters a name cannot hold become `-`."""
    if data.get("source"):
        source = data["source"]
        base = source["git_url"].rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        tail = source.get("branch") or SOURCE_DEFAULTS["branch"]
    else:
        last = data["image"].split("@", 1)[0].rsplit("/", 1)[-1]  # a registry's `:port` is before a `/`
        base, _, tag = last.partition(":")
        tail = tag or "latest"
    name = _NAME_JUNK.sub("-", f"{base}-{tail}").strip("-._")[:MAX_NAME] or "agent"
    return name if name[0].isalnum() else f"agent-{name}"[:MAX_NAME]


def unique_name(owner_id: str, base: str) -> str:
    """`base`, or `base-2`, `base-3`... : the first that the owner has no agent of (read now; the unique
    constraint still decides between two concurrent requests)."""
    stem = base[: MAX_NAME - 8]
    similar = or_(Agent.name == base, Agent.name.startswith(stem, autoescape=True))
    taken = set(db.session.scalars(select(Agent.name).where(Agent.owner_id == owner_id, similar)))
    if base not in taken:
        return base
    suffix = 2
    while f"{stem}-{suffix}" in taken:
        suffix += 1
    return f"{stem}-{suffix}"


def update_agent(actor: Principal, agent_id: str, data: dict[str, Any]) -> Agent:
    """Replace the given top-level fields of an agent; takes effect at its next deploy or restart.

    Raises:
        NotFound: as for `get_agent` (only ever about the agent itself).
        ValidationFailed: `registry_auth` names a secret the owner does not have, or a registry that is not the
            image's (also when the image changes).
        Conflict: the name is taken; `secrets` names a secret the owner does not have; or the change
            would leave the stored agent without image and source, with a variable in both env and
            secrets, or a service with a timeout (a body that is wrong on its own is the schema's 400,
            before this).
    """
    agent = get_agent(actor, agent_id)
    data = _run_fields(_with_defaults(dict(data)), agent)
    if data.get("image"):
        data["source"] = None
    elif data.get("source"):
        data["image"] = None
    if not (data.get("image", agent.image) or data.get("source", agent.source)):
        raise Conflict(
            "This change would leave the agent with neither an image nor a git source.",
            details={"image": ["Give an image or a git source."]},
        )
    if "secrets" in data:
        _check_secret_references(agent.owner_id, data["secrets"] or {}, error=Conflict)
    if "registry_auth" in data or data.get("image"):
        data["registry_auth"] = _registry_auth(
            agent.owner_id, data.get("registry_auth", agent.registry_auth), image=data.get("image", agent.image)
        )
    if "name" in data and _name_taken(agent.owner_id, data["name"], exclude_id=agent.id):
        raise Conflict("You already have an agent with this name.", details={"name": data["name"]})
    if "env" in data or "secrets" in data:
        env = data.get("env", agent.env) or {}
        secrets = data.get("secrets", agent.secrets) or {}
        overlap = sorted(set(env) & set(secrets))
        if overlap:
            raise Conflict(
                "This change would set a variable in both env and secrets.",
                details={"secrets": [f"Also in env: {', '.join(overlap)}."]},
            )
    for key, value in data.items():
        setattr(agent, key, value)
    _commit_or_conflict(agent.name)
    return agent


def delete_agent(actor: Principal, agent_id: str) -> None:
    """Delete an agent that has no live deployment.

    Raises:
        NotFound: as for `get_agent`.
        Conflict: it has a live deployment; undeploy it first.
    """
    agent = get_agent(actor, agent_id)
    live = db.session.scalar(
        select(Deployment.id).where(Deployment.agent_id == agent.id, Deployment.status != DeploymentStatus.KILLED)
    )
    if live is not None:
        raise Conflict("The agent has a live deployment; undeploy it first.", details={"deployment_id": live})
    db.session.delete(agent)
    db.session.commit()


@dataclass(frozen=True)
class DeployedAgent:
    """An agent seen together with its live deployment (reads through to the agent's fields)."""

    agent: Agent
    deployment: Deployment

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)


def deployed_agents(user_id: str, *, skip: int, limit: int) -> Page[DeployedAgent]:
    """Agents of `user_id` that have a live (non-killed) deployment, each with it, newest agent first."""
    stmt = (
        select(Agent, Deployment)
        .join(Deployment, Deployment.agent_id == Agent.id)
        .where(Agent.owner_id == user_id, Deployment.status != DeploymentStatus.KILLED)
        .order_by(Agent.created_at.desc(), Agent.id.desc())
        .options(selectinload(Deployment.instances))
    )
    total = db.session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = [
        DeployedAgent(agent, deployment) for agent, deployment in db.session.execute(stmt.offset(skip).limit(limit))
    ]
    return Page(items=rows, total=total, skip=skip, limit=limit)
