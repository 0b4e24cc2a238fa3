"""The deployment state machine: one table of allowed transitions, and every rule about actions.

Nothing else sets `Deployment.status`: the API's services and the reconciler both call `transition`,
which checks the table, stamps the timestamps, keeps the agent's status in step and records an event.
Which user actions are allowed in which status (restart, scale, stop, delete) is decided here too, by
`check_action`, so the contract's 409/400 rules live in one place.

What is stored as an event's message, a deployment's `error` and an event's `error` datum often quotes
the engine, a registry or a build (text the user's image or repository chose), so it passes through
`stored_text` here: one line, at most `STORED_TEXT_MAX_CHARS` characters.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import inspect, update

from deploy_service.errors import InvalidState
from deploy_service.extensions import db
from deploy_service.models import (
    SERVING,
    Agent,
    AgentStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
)
from deploy_service.models.types import utcnow
from deploy_service.settings import current_settings

_deployments = Deployment.__table__

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"  +")


def stored_text(text: str) -> str:
    """`text` as one line of at most `STORED_TEXT_MAX_CHARS` characters (the full text of a build is in its
    build log): control characters (newlines, escapes) become spaces, runs of spaces one, and a longer
    text is cut with a final `…`."""
    limit = current_settings().stored_text_max
    line = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


STATUSES = tuple(DeploymentStatus)
LIVE_STATUSES = frozenset(STATUSES) - {DeploymentStatus.KILLED}

# The one table: from each status, the statuses it may move to.
_S = DeploymentStatus  # a short name, so each rule of the tables below reads on one line
TRANSITIONS: dict[str, frozenset[DeploymentStatus]] = {
    _S.DEPLOYING: frozenset({_S.RUNNING, _S.READY, _S.FAILED, _S.STOPPED, _S.KILLED}),
    _S.RUNNING: frozenset({_S.READY, _S.FAILED, _S.STOPPED, _S.KILLED}),
    _S.READY: frozenset({_S.RUNNING, _S.FAILED, _S.STOPPED, _S.KILLED}),
    _S.STOPPED: frozenset({_S.DEPLOYING, _S.KILLED}),
    _S.FAILED: frozenset({_S.DEPLOYING, _S.STOPPED, _S.KILLED}),
    _S.KILLED: frozenset(),
}

# User actions: the statuses each is allowed from, and what it means there.
RESTART_ROLLING = "rolling"
RESTART_START = "start"
RESTART_MODES: dict[str, str] = {
    _S.RUNNING: RESTART_ROLLING,
    _S.READY: RESTART_ROLLING,
    _S.STOPPED: RESTART_START,
    _S.FAILED: RESTART_START,
}
SCALABLE = SERVING
STOPPABLE = frozenset({_S.DEPLOYING, _S.RUNNING, _S.READY, _S.FAILED, _S.STOPPED})
SCALE_MESSAGE = "Can only scale running deployments"

# The agent's status while its deployment is in each status.
AGENT_STATUS_FOR: dict[str, AgentStatus] = {
    _S.DEPLOYING: AgentStatus.DEPLOYED,
    _S.RUNNING: AgentStatus.DEPLOYED,
    _S.READY: AgentStatus.DEPLOYED,
    _S.FAILED: AgentStatus.DEPLOYED,
    _S.STOPPED: AgentStatus.STOPPED,
    _S.KILLED: AgentStatus.STOPPED,
}


def can_transition(current: str, new: str) -> bool:
    """Whether the table allows `current → new`."""
    return new in TRANSITIONS.get(current, frozenset())


def record_event(
    deployment: Deployment, event_type: str, message: str, data: dict[str, Any] | None = None
) -> DeploymentEvent:
    """Add an event to the session (the caller commits), stamped with the deployment's status.

    The message, and an `error` in `data`, are stored as `stored_text`.

    The deployment's `events_total` goes up by one in the same transaction, by a Core UPDATE: atomic
    under concurrent writers, and outside the ORM's optimistic `version`, so recording an event never
    makes a user's concurrent action on the deployment lose with 409. (A deployment not inserted yet
    counts its first events in the row it is inserted with.)
    """
    data = dict(data or {})
    if isinstance(data.get("error"), str):
        data["error"] = stored_text(data["error"])
    event = DeploymentEvent(
        deployment_id=deployment.id,
        event_type=event_type,
        status=deployment.status,
        message=stored_text(message),
        data=data,
        created_at=utcnow(),
    )
    db.session.add(event)
    if inspect(deployment).persistent:
        # No autoflush: a concurrent change of the deployment must surface at the caller's commit (409),
        # not here.
        with db.session.no_autoflush:
            db.session.execute(
                update(_deployments)
                .where(_deployments.c.id == deployment.id)
                .values(events_total=_deployments.c.events_total + 1)
            )
    else:  # not inserted yet: the count goes in with the row
        deployment.events_total = (deployment.events_total or 0) + 1
    return event


def transition(
    deployment: Deployment,
    new: DeploymentStatus,
    message: str,
    *,
    error: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Move a deployment to `new`, stamping times, syncing its agent and recording a `status_changed` event.

    Raises:
        InvalidState: the table does not allow it.
    """
    old = deployment.status
    if old == new:
        return
    if not can_transition(old, new):
        raise InvalidState(f"A {old} deployment cannot become {new}.", details={"status": old})
    now = utcnow()
    deployment.status = new
    if new == DeploymentStatus.RUNNING and deployment.started_at is None:
        deployment.started_at = now
    if new == DeploymentStatus.READY:
        deployment.ready_at = now
        deployment.progress_started_at = None
        deployment.started_at = deployment.started_at or now
    if new == DeploymentStatus.FAILED:
        deployment.error = stored_text(error or message)
        deployment.progress_started_at = None
    if new == DeploymentStatus.DEPLOYING:
        deployment.error = None
        deployment.ready_at = None
    if new in (DeploymentStatus.STOPPED, DeploymentStatus.KILLED):
        deployment.progress_started_at = None
    if new == DeploymentStatus.KILLED:
        deployment.ended_at = now
    agent = db.session.get(Agent, deployment.agent_id)
    if agent is not None:
        agent.status = AGENT_STATUS_FOR[new]
    record_event(deployment, "status_changed", message, {"from": old, "to": new, **(data or {})})


def start_rollout(deployment: Deployment) -> None:
    """Mark the start of a deploy, restart or scale: the progress deadline counts from now."""
    deployment.progress_started_at = utcnow()


def check_restart(deployment: Deployment) -> str:
    """The restart mode for the deployment's status (`rolling` or `start`).

    Raises:
        InvalidState: 409 from `deploying` or `killed`.
    """
    mode = RESTART_MODES.get(deployment.status)
    if mode is None:
        raise InvalidState(
            f"Cannot restart a {deployment.status} deployment.",
            details={"status": deployment.status},
        )
    return mode


def check_scale(deployment: Deployment) -> None:
    """Scaling is only for running deployments.

    Raises:
        InvalidState: with status 400 and the contract's message.
    """
    if deployment.status not in SCALABLE:
        raise InvalidState(SCALE_MESSAGE, status_code=400, details={"status": deployment.status})


def check_stop(deployment: Deployment) -> None:
    """Stopping is allowed from every live status (stopping a stopped deployment changes nothing).

    Raises:
        InvalidState: 409 for a killed deployment.
    """
    if deployment.status not in STOPPABLE:
        raise InvalidState(f"Cannot stop a {deployment.status} deployment.", details={"status": deployment.status})
