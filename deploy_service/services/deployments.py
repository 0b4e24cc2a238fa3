"""Deployments: create, read, and the user actions (restart, scale, stop, delete), plus events and results.

These calls write *desired* state and return at once (202; delete 200); the reconciler converges the
engine on it. Each mutating call checks that the engine answers before it writes anything (503
otherwise), asks `lifecycle` whether the action is allowed, records the action as an event, commits
once, and wakes the reconciler. No call waits for the engine to start or stop a container: delete
marks the deployment killed, and the reconciler's next pass removes its containers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.exc import StaleDataError

from deploy_service.errors import Conflict, InvalidState, NotFound, ValidationFailed
from deploy_service.extensions import db
from deploy_service.models import (
    Agent,
    AgentKind,
    ApiKey,
    Deployment,
    DeploymentEvent,
    DeploymentResult,
    DeploymentStatus,
    DesiredState,
    InstanceStatus,
    Principal,
    ReleaseReason,
    RestartPolicy,
)
from deploy_service.models.types import new_id
from deploy_service.references import BUILT_IMAGE_REPOSITORY, InvalidReference, check_git_origin, check_image_origin
from deploy_service.services import alerts, lifecycle, notify, quotas
from deploy_service.services.agents import add_agent, default_name, get_agent, unique_name
from deploy_service.services.common import Page, paginate, scope_to_owner
from deploy_service.services.engine import require_engine
from deploy_service.services.secrets import secret_versions
from deploy_service.settings import current_settings


def built_image_tag(agent_id: str, deployment_id: str, release: int) -> str:
    """The tag of an image built from an agent's git source: per agent, deployment and release number
    (an agent deployed again starts at release 1 again, under another deployment's prefix)."""
    return f"{BUILT_IMAGE_REPOSITORY}/agent-{agent_id}:{deployment_id[:8]}-r{release}"


def check_stored_image_origin(image: str | None) -> None:
    """The stored agent's image obeys today's rule (an agent stored before it may not).

    Raises:
        ValidationFailed: a loopback or private registry not in `ALLOWED_REGISTRIES`, or a built image.
    """
    if not image:
        return
    settings = current_settings()
    try:
        check_image_origin(
            image, allowed_registries=settings.agents.allowed_registries, built_registry=settings.runner.registry
        )
    except InvalidReference as exc:
        raise ValidationFailed(str(exc), details={"image": [str(exc)]}) from exc


def check_stored_git_origin(source: dict[str, Any] | None) -> None:
    """The stored agent's git source obeys today's rule (an agent stored before it may not).

    Raises:
        ValidationFailed: a loopback or private host not in `ALLOWED_GIT_HOSTS`.
    """
    if not source or not source.get("git_url"):
        return
    try:
        check_git_origin(source["git_url"], allowed_hosts=current_settings().runner.allowed_git_hosts)
    except InvalidReference as exc:
        raise ValidationFailed(str(exc), details={"source": {"git_url": [str(exc)]}}) from exc


def resolve_config(agent: Agent, overrides: dict[str, Any]) -> dict[str, Any]:
    """The runtime config a deployment runs with: the agent's settings plus the deploy-time overrides.

    Secrets appear by name only; their values are decrypted by the reconciler at container start. Their
    versions (`secret_versions`, internal like `overrides`) make a restart after a rotation a new release.

    Raises:
        ValidationFailed: env and secrets overlap, or the agent's image or git source is one it may no
            longer name.
    """
    check_stored_image_origin(agent.image)
    check_stored_git_origin(agent.source)
    env = {**(agent.env or {}), **(overrides.get("env") or {})}
    overlap = sorted(set(env) & set(agent.secrets or {}))
    if overlap:
        raise ValidationFailed(
            "Variables set in both env and the agent's secrets.",
            details={"env": [f"Also a secret: {', '.join(overlap)}."]},
        )
    return {
        "image": agent.image,
        "source": agent.source,
        "port": agent.port,
        "invoke_path": agent.invoke_path,
        "command": agent.command,
        "env": env,
        "secrets": dict(agent.secrets or {}),
        "secret_versions": secret_versions(agent.owner_id, (agent.secrets or {}).values()),
        "health_check": agent.health_check,
        "resources": {**(agent.resources or {}), **(overrides.get("resources") or {})},
        "read_only_rootfs": agent.read_only_rootfs,
        "run_as_user": agent.run_as_user,
        **run_fields(agent),
        "overrides": overrides,
    }


def run_fields(agent: Agent) -> dict[str, Any]:
    """What a release records of how the agent runs: nothing for a service that restarts always (what every
    release was before jobs, so their configs compare equal), else `kind`, `restart_policy` and, for a job,
    `timeout_seconds`."""
    if agent.kind == AgentKind.SERVICE and agent.restart_policy == RestartPolicy.ALWAYS:
        return {}
    fields: dict[str, Any] = {"kind": agent.kind, "restart_policy": agent.restart_policy}
    if agent.kind == AgentKind.JOB:
        fields["timeout_seconds"] = agent.timeout_seconds
    return fields


def _load(deployment_id: str) -> Deployment | None:
    """One deployment with its instances, in one query (a join: cheaper than a second select for one row)."""
    return (
        db.session.scalars(
            select(Deployment).where(Deployment.id == deployment_id).options(joinedload(Deployment.instances))
        )
        .unique()
        .one_or_none()
    )


def get_deployment(actor: Principal, deployment_id: str) -> Deployment:
    """A deployment the caller may see.

    Raises:
        NotFound: missing or someone else's (the same answer).
    """
    deployment = _load(deployment_id)
    if deployment is None or (not actor.is_admin and deployment.owner_id != actor.id):
        raise NotFound("Deployment not found.")
    return deployment


def list_deployments(
    actor: Principal, *, skip: int, limit: int, agent_id: str | None = None, status: str | None = None
) -> Page[Deployment]:
    """The caller's deployments, newest first."""
    stmt = scope_to_owner(select(Deployment), Deployment.owner_id, actor).options(selectinload(Deployment.instances))
    if agent_id:
        stmt = stmt.where(Deployment.agent_id == agent_id)
    if status:
        stmt = stmt.where(Deployment.status == status)
    return paginate(stmt.order_by(Deployment.created_at.desc(), Deployment.id.desc()), skip=skip, limit=limit)


def live_deployment(agent_id: str) -> Deployment | None:
    """The agent's non-killed deployment, if any."""
    return db.session.scalar(
        select(Deployment)
        .where(Deployment.agent_id == agent_id, Deployment.status != DeploymentStatus.KILLED)
        .options(selectinload(Deployment.instances))
    )


log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
RACE_ATTEMPTS = 3


def on_fresh_state(action: Callable[P, R]) -> Callable[P, R]:
    """Run a user action again, from a fresh read, when a concurrent write to the deployment won the race.

    A deployment row carries an optimistic `version`; the reconciler writes it on every status change,
    so an action that read the row just before such a write matches no row when it flushes (at the
    commit, or earlier at an autoflush). The action is then rolled back whole and decided again on what
    is there now (it may now be refused, e.g. a restart of a deployment that just became `killed`).
    Only a deployment that keeps changing under `RACE_ATTEMPTS` tries answers 409 `conflict`.
    """

    @functools.wraps(action)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, RACE_ATTEMPTS + 1):
            try:
                return action(*args, **kwargs)
            except StaleDataError:
                db.session.rollback()
                log.info(
                    "%s lost a race with a concurrent write (try %d of %d)", action.__name__, attempt, RACE_ATTEMPTS
                )
        deployment_id = kwargs.get("deployment_id", args[1] if len(args) > 1 else None)
        raise Conflict(
            "The deployment kept changing while this request was handled; read it again and retry.",
            details={"deployment_id": deployment_id},
        )

    return wrapper


def commit_action(deployment: Deployment, *, wake: bool = True) -> None:
    """Commit one action (a lost race raises StaleDataError, which `on_fresh_state` retries)."""
    db.session.commit()
    if wake:
        notify.desired_state_changed()


def _check_replicas(replicas: int) -> None:
    maximum = current_settings().agents.max_replicas
    if not 1 <= replicas <= maximum:
        raise ValidationFailed(
            f"replicas must be between 1 and {maximum}.", details={"replicas": [f"Must be between 1 and {maximum}."]}
        )


def create_deployment(
    actor: Principal,
    agent_id: str,
    *,
    replicas: int = 1,
    env: dict[str, str] | None = None,
    resources: dict[str, Any] | None = None,
) -> Deployment:
    """Deploy an agent: a new deployment in `deploying`; the reconciler pulls/builds and starts it.

    Raises:
        NotFound: no such agent visible to the caller.
        Conflict: it already has a live deployment (`details.deployment_id`).
        ValidationFailed: bad replicas or overrides.
        QuotaExceeded: the owner's live deployments would ask for more replicas or memory than
            `QUOTA_REPLICAS` / `QUOTA_MEMORY_MB` allow (admins are exempt).
        EngineUnavailable: the engine does not answer (nothing is written).
    """
    agent = get_agent(actor, agent_id)
    _check_replicas(replicas)
    existing = live_deployment(agent.id)
    if existing is not None:
        raise Conflict("The agent already has a live deployment.", details={"deployment_id": existing.id})
    overrides = {key: value for key, value in (("env", env), ("resources", resources)) if value}
    deployment = _add_deployment(actor, agent, replicas=replicas, overrides=overrides)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        existing = live_deployment(agent_id)
        raise Conflict(
            "The agent already has a live deployment.", details={"deployment_id": existing.id if existing else None}
        ) from exc
    notify.desired_state_changed()
    return deployment


NAME_ATTEMPTS = 3


def deploy_new_agent(actor: Principal, data: dict[str, Any], *, replicas: int = 1) -> Deployment:
    """Deploy straight from a repository or an image: an agent owned by the caller, made from `data` (what
    `AgentInputSchema` takes, `name` optional) exactly as `POST /v1/agents` makes one, and its deployment,
    in one transaction: a refused deploy leaves no agent behind.

    Without `name`, the agent is named `agents.default_name(data)`, with a suffix (`-2`, `-3`...) when the
    caller has an agent of that name already (chosen again if a concurrent request took it first).

    Raises:
        As `agents.add_agent` (secrets, registry_auth, the name taken, `QUOTA_AGENTS`) and `create_deployment`
        (replicas, `QUOTA_REPLICAS` / `QUOTA_MEMORY_MB`, the engine not answering); nothing is written.
    """
    _check_replicas(replicas)
    named = bool(data.get("name"))
    for attempt in range(1, NAME_ATTEMPTS + 1):
        fields = dict(data)
        if not named:
            fields["name"] = unique_name(actor.id, default_name(data))
        try:
            agent = add_agent(actor, fields)
            db.session.flush()  # the agent's column defaults, which its deployment's config is resolved from
            deployment = _add_deployment(actor, agent, replicas=replicas, overrides={}, agent_created=True)
            db.session.commit()
        except IntegrityError as exc:
            db.session.rollback()
            if named or attempt == NAME_ATTEMPTS:
                raise Conflict("You already have an agent with this name.", details={"name": fields["name"]}) from exc
            continue
        except Exception:
            db.session.rollback()
            raise
        notify.desired_state_changed()
        return deployment
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _add_deployment(
    actor: Principal, agent: Agent, *, replicas: int, overrides: dict[str, Any], agent_created: bool = False
) -> Deployment:
    """A new deployment of `agent` in `deploying`, with its first release and events, added to the session
    (the caller commits).

    Raises:
        ValidationFailed: the overrides clash with the agent's secrets, or its image or source is one it may
            no longer name.
        EngineUnavailable: the engine does not answer.
        QuotaExceeded: as `quotas.check_deployment` (which rolls the transaction back).
    """
    config = resolve_config(agent, overrides)
    require_engine()
    quotas.check_deployment(actor, agent.owner_id, replicas=replicas, config=config)
    deployment_id = new_id()
    deployment = Deployment(
        id=deployment_id,
        agent_id=agent.id,
        owner_id=agent.owner_id,
        status=DeploymentStatus.DEPLOYING,
        desired_state=DesiredState.RUNNING,
        replicas_desired=replicas,
        revision=1,
        image=agent.image or built_image_tag(agent.id, deployment_id, 1),
        config=config,
    )
    lifecycle.start_rollout(deployment)
    db.session.add(deployment)
    db.session.flush()
    agent.status = lifecycle.agent_status_for(deployment, DeploymentStatus.DEPLOYING)
    made = " (the agent was created by this deploy)" if agent_created else ""
    lifecycle.record_event(
        deployment,
        "created",
        f"Deployment of {agent.name!r} created with {replicas} replica(s){made}.",
        {
            "replicas": replicas,
            "image": agent.image,
            "source": agent.source,
            "revision": 1,
            **({"agent_created": True} if agent_created else {}),
        },
    )
    lifecycle.begin_release(deployment, 1, ReleaseReason.DEPLOY, created_by=actor.id)
    return deployment


@on_fresh_state
def restart(actor: Principal, deployment_id: str) -> Deployment:
    """Rolling restart from running/ready; start again from stopped/failed (→ deploying).

    The agent's current settings apply: the config is resolved again and a git source is rebuilt. When
    what would run differs from the current release (`lifecycle.needs_release`) this is a new release
    (reason `restart`); otherwise the current release's replicas are replaced (a `replicas_replaced` event).

    Raises:
        InvalidState: 409 from deploying or killed.
        QuotaExceeded: the agent's memory grew past what `QUOTA_MEMORY_MB` leaves (admins are exempt).
        EngineUnavailable: nothing is written.
    """
    deployment = get_deployment(actor, deployment_id)
    mode = lifecycle.check_restart(deployment)
    require_engine()
    agent = db.session.get(Agent, deployment.agent_id)
    assert agent is not None  # the foreign key cascades
    config = resolve_config(agent, deployment.config.get("overrides") or {})
    quotas.check_deployment(
        actor, deployment.owner_id, replicas=deployment.replicas_desired, config=config, replacing=deployment
    )
    current = lifecycle.current_release(deployment)
    message = "Rolling restart requested." if mode == lifecycle.RESTART_ROLLING else "Start requested."
    roll_out(deployment, mode, "restart_requested", message)
    if lifecycle.needs_release(current, config):
        number = lifecycle.next_release_number(deployment)
        deployment.config = config
        deployment.image = agent.image or built_image_tag(agent.id, deployment.id, number)
        lifecycle.begin_release(deployment, number, ReleaseReason.RESTART, created_by=actor.id)
    else:
        lifecycle.record_event(
            deployment,
            "replicas_replaced",
            f"Nothing changed since release {deployment.revision}: its replicas are replaced.",
            {"number": deployment.revision, "generation": deployment.generation},
        )
    commit_action(deployment)
    return deployment


def roll_out(deployment: Deployment, mode: str, event_type: str, message: str) -> None:
    """Replace the deployment's replicas (a new generation, past every one used before: after an automatic
    rollback `generation` is the older one that serves), and start it again from stopped/failed.

    Its image is prepared again (pulled, or rebuilt from a git source) before the new replicas start.
    """
    deployment.image_ready = False
    deployment.image_error = None
    deployment.generation = max(deployment.generation, deployment.latest_generation) + 1
    deployment.latest_generation = deployment.generation
    deployment.desired_state = DesiredState.RUNNING
    lifecycle.start_rollout(deployment)
    lifecycle.record_event(deployment, event_type, message, {"mode": mode, "generation": deployment.generation})
    if mode == lifecycle.RESTART_START:
        for instance in deployment.instances:
            instance.recent_restarts = 0
            instance.next_restart_at = None
        lifecycle.transition(deployment, DeploymentStatus.DEPLOYING, "Restarting.")


@on_fresh_state
def scale(actor: Principal, deployment_id: str, replicas: int) -> Deployment:
    """Change the replica count of a running deployment.

    Raises:
        InvalidState: 400 unless running/ready.
        ValidationFailed: replicas out of range.
        QuotaExceeded: more replicas (or memory) than the owner's quota leaves (admins are exempt).
    """
    deployment = get_deployment(actor, deployment_id)
    lifecycle.check_scale(deployment)
    _check_replicas(replicas)
    require_engine()
    quotas.check_deployment(
        actor, deployment.owner_id, replicas=replicas, config=deployment.config or {}, replacing=deployment
    )
    previous = deployment.replicas_desired
    deployment.replicas_desired = replicas
    if replicas > previous and not lifecycle.is_job(deployment):  # a job's timeout counts from its run's start
        lifecycle.start_rollout(deployment)
    lifecycle.record_event(
        deployment, "scaled", f"Scaled from {previous} to {replicas} replica(s).", {"from": previous, "to": replicas}
    )
    commit_action(deployment)
    return deployment


@on_fresh_state
def stop(actor: Principal, deployment_id: str) -> Deployment:
    """Stop a deployment: its containers are removed and it becomes `stopped`.

    Raises:
        InvalidState: 409 for a killed deployment.
    """
    deployment = get_deployment(actor, deployment_id)
    lifecycle.check_stop(deployment)
    if deployment.desired_state == DesiredState.STOPPED:
        return deployment
    require_engine()
    deployment.desired_state = DesiredState.STOPPED
    lifecycle.record_event(deployment, "stop_requested", "Stop requested.")
    commit_action(deployment)
    return deployment


@on_fresh_state
def delete(actor: Principal, deployment_id: str) -> Deployment:
    """Kill a deployment: `killed`, `ended_at` set, agent `stopped`, at once. Idempotent.

    Its containers are removed by the reconciler, woken at the commit: a killed deployment is not live,
    so they are orphans to its next pass. The answer never waits for the engine to stop them (that
    takes the stop timeout for an agent that ignores SIGTERM).

    Raises:
        EngineUnavailable: nothing is written.
    """
    deployment = get_deployment(actor, deployment_id)
    if deployment.status == DeploymentStatus.KILLED:
        return deployment
    require_engine()
    deployment.desired_state = DesiredState.DELETED
    lifecycle.record_event(deployment, "delete_requested", "Delete requested.")
    lifecycle.transition(deployment, DeploymentStatus.KILLED, "Deployment deleted; its containers are removed.")
    alerts.resolve_all(deployment.id)
    for instance in deployment.instances:
        instance.status = InstanceStatus.REMOVED
        instance.healthy = None
    commit_action(deployment)
    return deployment


def agent_deployment(actor: Principal, agent_id: str) -> Deployment:
    """The agent's live deployment, else its most recent one.

    Raises:
        NotFound: the agent was never deployed (or is not visible).
    """
    agent = get_agent(actor, agent_id)
    deployment = live_deployment(agent.id) or db.session.scalar(
        select(Deployment)
        .where(Deployment.agent_id == agent.id)
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        .options(selectinload(Deployment.instances))
        .limit(1)
    )
    if deployment is None:
        raise NotFound("The agent has never been deployed.")
    return deployment


def live_deployment_of_agent(
    actor: Principal, agent_id: str, *, missing: Literal["not_found", "invalid_state"] = "not_found"
) -> Deployment:
    """The agent's live deployment.

    Args:
        missing: what an agent without one is: `not_found` (undeploy: the contract's 404) or
            `invalid_state` (restart: the agent exists, its state does not allow the action: 409).

    Raises:
        NotFound: the agent is not visible, or (with `missing="not_found"`) it has no live deployment.
        InvalidState: with `missing="invalid_state"`, it has no live deployment.
    """
    agent = get_agent(actor, agent_id)
    deployment = live_deployment(agent.id)
    if deployment is None:
        if missing == "invalid_state":
            raise InvalidState("The agent has no live deployment to restart.", details={"agent_id": agent.id})
        raise NotFound("The agent has no live deployment.")
    return deployment


def deployment_for(caller: Principal | ApiKey, deployment_id: str) -> Deployment:
    """A deployment the caller may see: its owner's (or an admin's), or one of a key's own agent.

    Raises:
        NotFound: otherwise.
    """
    if isinstance(caller, ApiKey):
        deployment = _load(deployment_id)
        if deployment is None or deployment.agent_id != caller.agent_id:
            raise NotFound("Deployment not found.")
        return deployment
    return get_deployment(caller, deployment_id)


def add_result(caller: Principal | ApiKey, deployment_id: str, results: Any) -> DeploymentResult:
    """Store something the deployment produced (posted by its owner or by the agent with its key)."""
    deployment = deployment_for(caller, deployment_id)
    author = f"key:{caller.id}" if isinstance(caller, ApiKey) else f"user:{caller.id}"
    result = DeploymentResult(deployment_id=deployment.id, results=results, created_by=author)
    db.session.add(result)
    db.session.flush()
    lifecycle.record_event(deployment, "result_added", "A result was added.", {"result_id": result.id})
    db.session.commit()
    return result


AGENT_REPORTED = "agent_reported"


def report_event(caller: Principal | ApiKey, deployment_id: str, message: str, data: dict[str, Any]) -> DeploymentEvent:
    """An `agent_reported` event of the deployment: the agent's own word on its progress, posted with its key
    (or by its owner), listed with the deployment's other events and stamped with its status.

    Raises:
        NotFound: not the caller's deployment (a key: not a deployment of the key's agent).
    """
    deployment = deployment_for(caller, deployment_id)
    event = lifecycle.record_event(deployment, AGENT_REPORTED, message, data)
    db.session.commit()
    return event


def list_results(caller: Principal | ApiKey, deployment_id: str, *, skip: int, limit: int) -> Page[DeploymentResult]:
    """A deployment's results, newest first."""
    deployment = deployment_for(caller, deployment_id)
    stmt = (
        select(DeploymentResult)
        .where(DeploymentResult.deployment_id == deployment.id)
        .order_by(DeploymentResult.created_at.desc(), DeploymentResult.id.desc())
    )
    return paginate(stmt, skip=skip, limit=limit)
