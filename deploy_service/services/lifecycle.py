"""The deployment state machine: one table of allowed transitions, and every rule about actions.

Nothing else sets `Deployment.status`: the API's services and the reconciler both call `transition`,
which checks the table, stamps the timestamps, keeps the agent's status in step and records an event.
Which user actions are allowed in which status (restart, scale, stop, delete) is decided here too, by
`check_action`, so the contract's 409/400 rules live in one place; and so is what a deployment's status
change means for its releases (`settle_release`): ready activates the pending release, failed, stopped
or killed fails it. The webhook events of those changes (`release.activated`, `release.failed`,
`deployment.failed`) are queued here as well, in the same transaction (`webhook_events`).

What is stored as an event's message, a deployment's `error` and an event's `error` datum often quotes
the engine, a registry or a build (text the user's image or repository chose), so it passes through
`stored_text` here: one line, at most `STORED_TEXT_MAX_CHARS` characters.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, inspect, select, update

from deploy_service.errors import InvalidState
from deploy_service.extensions import db
from deploy_service.models import (
    SERVING,
    Agent,
    AgentKind,
    AgentStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Release,
    ReleaseReason,
    ReleaseStatus,
    WebhookEvent,
)
from deploy_service.models.types import utcnow
from deploy_service.observability import RolloutOutcome, count_rollout
from deploy_service.services import webhook_events
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
    _S.DEPLOYING: frozenset({_S.RUNNING, _S.READY, _S.FAILED, _S.SUCCEEDED, _S.STOPPED, _S.KILLED}),
    _S.RUNNING: frozenset({_S.READY, _S.FAILED, _S.SUCCEEDED, _S.STOPPED, _S.KILLED}),
    _S.READY: frozenset({_S.RUNNING, _S.FAILED, _S.STOPPED, _S.KILLED}),
    _S.STOPPED: frozenset({_S.DEPLOYING, _S.KILLED}),
    _S.FAILED: frozenset({_S.DEPLOYING, _S.STOPPED, _S.KILLED}),
    _S.SUCCEEDED: frozenset({_S.DEPLOYING, _S.STOPPED, _S.KILLED}),
    _S.KILLED: frozenset(),
}
ENDED = frozenset({_S.FAILED, _S.SUCCEEDED})
"""A job's run is over in these (`ended_at` set; its agent `stopped`)."""

# User actions: the statuses each is allowed from, and what it means there.
RESTART_ROLLING = "rolling"
RESTART_START = "start"
RESTART_MODES: dict[str, str] = {
    _S.RUNNING: RESTART_ROLLING,
    _S.READY: RESTART_ROLLING,
    _S.STOPPED: RESTART_START,
    _S.FAILED: RESTART_START,
    _S.SUCCEEDED: RESTART_START,
}
SCALABLE = SERVING
STOPPABLE = frozenset({_S.DEPLOYING, _S.RUNNING, _S.READY, _S.FAILED, _S.SUCCEEDED, _S.STOPPED})
SCALE_MESSAGE = "Can only scale running deployments"

# The agent's status while its deployment is in each status.
AGENT_STATUS_FOR: dict[str, AgentStatus] = {
    _S.DEPLOYING: AgentStatus.DEPLOYED,
    _S.RUNNING: AgentStatus.DEPLOYED,
    _S.READY: AgentStatus.DEPLOYED,
    _S.FAILED: AgentStatus.DEPLOYED,
    _S.SUCCEEDED: AgentStatus.STOPPED,
    _S.STOPPED: AgentStatus.STOPPED,
    _S.KILLED: AgentStatus.STOPPED,
}


def is_job(deployment: Deployment) -> bool:
    """The deployment runs a job (its config's `kind`; configs from before jobs are services)."""
    return (deployment.config or {}).get("kind") == AgentKind.JOB


def agent_status_for(deployment: Deployment, status: str) -> AgentStatus:
    """The agent's status while its deployment is in `status`: a job whose run ended is `stopped`."""
    if status in ENDED and is_job(deployment):
        return AgentStatus.STOPPED
    return AGENT_STATUS_FOR[status]


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
    if new in (DeploymentStatus.RUNNING, DeploymentStatus.SUCCEEDED) and deployment.started_at is None:
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
    if new in (DeploymentStatus.STOPPED, DeploymentStatus.KILLED, DeploymentStatus.SUCCEEDED):
        deployment.progress_started_at = None
    if new == DeploymentStatus.KILLED or (new in ENDED and is_job(deployment)):
        deployment.ended_at = now
    if new == DeploymentStatus.DEPLOYING and deployment.ended_at is not None:
        deployment.ended_at = None  # a job run again
    agent = db.session.get(Agent, deployment.agent_id)
    if agent is not None:
        agent.status = agent_status_for(deployment, new)
    record_event(deployment, "status_changed", message, {"from": old, "to": new, **(data or {})})
    if new != DeploymentStatus.FAILED:
        settle_release(deployment, new)
        return
    current = next((r for r in releases_in_play(deployment) if r.number == deployment.revision), None)
    settle_release(deployment, new, error=deployment.error)
    webhook_events.deployment_event(deployment, WebhookEvent.DEPLOYMENT_FAILED, release=current)


# What a pending release becomes when its deployment reaches each status before it was ready.
_PENDING_ENDS: dict[str, str] = {
    _S.FAILED: "",  # the deployment's own error
    _S.STOPPED: "The deployment was stopped before this release was ready.",
    _S.KILLED: "The deployment was deleted before this release was ready.",
}


# A job is never `ready` (it is not health-checked): its release becomes active once its replicas run, or
# once they all succeeded (a run too quick to be seen running); a failure of the run after that is the run's,
# not the release's, and rerunning it unchanged makes no new release.
_JOB_ACTIVATES = frozenset({_S.RUNNING, _S.SUCCEEDED})


def releases_in_play(deployment: Deployment) -> list[Release]:
    """The deployment's pending and active releases, oldest first (those added in this session too).

    Read without autoflush, like `record_event`: a concurrent change of the deployment must surface at
    the caller's commit, not here.
    """
    wanted = (ReleaseStatus.PENDING, ReleaseStatus.ACTIVE)
    with db.session.no_autoflush:
        found = set(
            db.session.scalars(
                select(Release).where(Release.deployment_id == deployment.id, Release.status.in_(wanted))
            )
        )
    found |= {r for r in db.session.new if isinstance(r, Release) and r.deployment_id == deployment.id}
    return sorted((r for r in found if r.status in wanted), key=lambda r: r.number)


def settle_release(deployment: Deployment, new: str, *, error: str | None = None) -> None:
    """The release consequence of a deployment reaching `new`: its pending release becomes active when it
    is ready, and failed when the deployment fails, is stopped or is deleted first. An active release
    stays active through a stop (it is what a start runs again) and through a failure that is not its
    rollout's; a deleted deployment runs nothing ever again, so its active release is `superseded`."""
    if new == DeploymentStatus.READY or (new in _JOB_ACTIVATES and is_job(deployment)):
        activate_pending(deployment)
        return
    if new not in _PENDING_ENDS:
        return
    now = utcnow()
    for release in releases_in_play(deployment):
        if release.status == ReleaseStatus.PENDING:
            fail_release(deployment, release, _PENDING_ENDS[new] or error or "The rollout failed.")
        elif new == DeploymentStatus.KILLED:
            release.status = ReleaseStatus.SUPERSEDED
            release.ended_at = now


def fail_release(
    deployment: Deployment, release: Release, error: str, *, outcome: RolloutOutcome = RolloutOutcome.FAILED
) -> None:
    """`release`'s rollout failed (`error` says why): it ends `failed`, its rollout is counted with `outcome`,
    and a `release.failed` webhook event is queued."""
    release.status = ReleaseStatus.FAILED
    release.error = stored_text(error)
    release.ended_at = utcnow()
    count_rollout(release, outcome)
    webhook_events.deployment_event(deployment, WebhookEvent.RELEASE_FAILED, release=release)


def activate_pending(deployment: Deployment) -> None:
    """The pending release's rollout completed: it becomes active, and the release it replaces ends
    (`rolled_back` when a rollback replaced it, `superseded` otherwise, or when it is the rollback's own
    target), with a `rollout_completed` event and a `release.activated` webhook event."""
    releases = releases_in_play(deployment)
    pending = [r for r in releases if r.status == ReleaseStatus.PENDING]
    if not pending:
        return
    release, now = pending[-1], utcnow()
    for previous in releases:
        if previous is release:
            continue
        if previous.status == ReleaseStatus.PENDING:
            fail_release(deployment, previous, f"Release {release.number} replaced it before it was ready.")
            continue
        if release.reason == ReleaseReason.ROLLBACK and previous.number != release.rollback_of:
            previous.status = ReleaseStatus.ROLLED_BACK
        else:
            previous.status = ReleaseStatus.SUPERSEDED
        previous.ended_at = now
    release.status = ReleaseStatus.ACTIVE
    release.activated_at = now
    count_rollout(release, RolloutOutcome.COMPLETED)
    record_event(
        deployment,
        "rollout_completed",
        f"Release {release.number} is active: every replica {'started' if is_job(deployment) else 'is ready'}.",
        {"number": release.number, "reason": release.reason, "rollback_of": release.rollback_of},
    )
    webhook_events.deployment_event(deployment, WebhookEvent.RELEASE_ACTIVATED, release=release)


def start_rollout(deployment: Deployment) -> None:
    """Mark the start of a deploy, restart or scale: the progress deadline counts from now."""
    deployment.progress_started_at = utcnow()


def check_restart(deployment: Deployment) -> str:
    """The restart mode for the deployment's status (`rolling` or `start`).

    Raises:
        InvalidState: 409 from `deploying` or `killed`, and for a job from `running` (a run is not rolled).
    """
    mode = RESTART_MODES.get(deployment.status)
    if mode == RESTART_ROLLING and is_job(deployment):
        raise InvalidState(
            "A job runs again once its run ended (succeeded, failed or stopped); stop or delete this run first.",
            details={"status": deployment.status},
        )
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


def release_source(config: dict[str, Any]) -> dict[str, Any] | None:
    """A release's `source` for a config: `{git_url, branch, commit}` of a git agent (commit not known yet)."""
    source = config.get("source")
    if not source:
        return None
    return {"git_url": source.get("git_url"), "branch": source.get("branch", "main"), "commit": None}


def needs_release(current: Release | None, config: dict[str, Any]) -> bool:
    """Whether a restart with `config` makes a new release rather than replacing the current one's replicas.

    It does when what would run differs from the current release (the agent's image, source or resolved
    config), or when the current release failed (a release's outcome is never rewritten). Whether a tag
    now names another image, or a git branch has moved, the image's preparation finds out and makes the
    new release then (`pin_image`, `branch_moved`).
    """
    if current is None or current.status == ReleaseStatus.FAILED:
        return True
    return bool(current.config != config)


def begin_release(
    deployment: Deployment,
    number: int,
    reason: ReleaseReason,
    *,
    created_by: str | None,
    image_id: str | None = None,
    source: dict[str, Any] | None = None,
    rollback_of: int | None = None,
) -> Release:
    """Add release `number` (pending) from the deployment's `image` and `config`, and make it current.

    A release still pending is replaced before it was ready: it becomes `failed`. Records
    `release_created` and `rollout_started`.
    """
    for earlier in releases_in_play(deployment):
        if earlier.status == ReleaseStatus.PENDING:
            fail_release(deployment, earlier, f"Release {number} replaced it before it was ready.")
    release = Release(
        deployment_id=deployment.id,
        number=number,
        status=ReleaseStatus.PENDING,
        reason=reason,
        image=deployment.image,
        image_id=image_id,
        source=source if source is not None else release_source(deployment.config or {}),
        config=deployment.config,
        rollback_of=rollback_of,
        created_by=created_by,
        created_at=utcnow(),
    )
    db.session.add(release)
    deployment.revision = number
    data = {"number": number, "reason": reason, "rollback_of": rollback_of}
    what = f"a rollback to release {rollback_of}" if rollback_of is not None else f"a {reason}"
    record_event(deployment, "release_created", f"Release {number} created ({what}).", data)
    record_event(deployment, "rollout_started", f"Rolling out release {number}.", {"number": number})
    return release


def next_release_number(deployment: Deployment) -> int:
    """The number of the deployment's next release: after its newest (an automatic rollback makes an older
    release current again, so the newest is not always `revision`)."""
    with db.session.no_autoflush:
        newest = db.session.scalar(select(func.max(Release.number)).where(Release.deployment_id == deployment.id))
    added = [r.number for r in db.session.new if isinstance(r, Release) and r.deployment_id == deployment.id]
    return max([newest or 0, deployment.revision, *added]) + 1


def roll_back(deployment: Deployment, *, generation: int, reason: str, error: str) -> Release | None:
    """A rolling update failed while the previous generation still serves: go back to it.

    The pending release fails with `error`; the active one stays active and current again (the deployment's
    image, config and `revision` are its own); the deployment's generation is the one that serves, so its
    replicas stay and the newer ones are removed (`latest_generation` stays: the next restart goes past the
    failed generation, never reusing its number). Records `rollout_failed` and `rolled_back`.

    Returns:
        The release that failed (None: the update was a restart that made no release).
    """
    releases = releases_in_play(deployment)
    failed = next((r for r in reversed(releases) if r.status == ReleaseStatus.PENDING), None)
    active = next((r for r in reversed(releases) if r.status == ReleaseStatus.ACTIVE), None)
    if active is not None:
        deployment.image = active.image
        deployment.config = dict(active.config or {})
        deployment.revision = active.number
    if failed is not None:
        fail_release(deployment, failed, error, outcome=RolloutOutcome.ROLLED_BACK)
    deployment.generation = generation
    deployment.progress_started_at = None
    deployment.image_ready, deployment.image_error = True, None  # what serves runs its own, pinned image
    for instance in deployment.instances:
        instance.recent_restarts = 0
        instance.next_restart_at = None
    number = failed.number if failed is not None else deployment.revision
    record_event(deployment, "rollout_failed", error, {"number": number, "error": error})
    record_event(
        deployment,
        "rolled_back",
        reason,
        {"from": number, "to": deployment.revision, "generation": generation, "automatic": True},
    )
    return failed


def current_release(deployment: Deployment) -> Release | None:
    """The deployment's current release: its newest, numbered `revision` (None before the first is added)."""
    return db.session.scalar(
        select(Release).where(Release.deployment_id == deployment.id, Release.number == deployment.revision)
    )


def pin_image(deployment: Deployment, image_id: str, *, built: bool, pinned_present: bool) -> str | None:
    """The current release's image was prepared and its reference names `image_id` now: pin the release to it.

    A release is pinned at its first start. Pinned to another id, a pending release (a rollback) runs its own
    image while the engine still has it, and cannot run at all once it is gone (the error is returned); an
    active one being started again (a restart that changed nothing) now runs something else: that is a change,
    a new release pinned to `image_id`. A built git image replaces its release's id: a new release's first
    build, or an earlier release built again from its commit once its image was removed (`prepare.py`).

    Args:
        pinned_present: the engine still has the image the release is pinned to.

    Returns:
        Why the release cannot run, or None.
    """
    release = current_release(deployment)
    if release is None or release.image_id == image_id:
        return None
    if release.image_id is None or built:
        release.image_id = image_id
        return None
    if release.status == ReleaseStatus.PENDING:
        if pinned_present:
            return None
        return (
            f"Release {release.number}'s image {release.image_id} is gone from the engine, and {release.image} "
            f"now names another image ({image_id})."
        )
    release = begin_release(
        deployment, next_release_number(deployment), ReleaseReason.RESTART, created_by=None, image_id=image_id
    )
    record_event(
        deployment,
        "image_moved",
        f"{release.image} now names another image: release {release.number} runs it.",
        {"number": release.number, "image": release.image, "image_id": image_id},
    )
    return None


def branch_moved(deployment: Deployment, *, image: str, commit: str | None) -> Release:
    """A restart that changed nothing found the git branch moved since its release was built: the image built
    from the branch's head (`image`, tagged for the next release) runs as a new release."""
    deployment.image = image
    release = begin_release(deployment, next_release_number(deployment), ReleaseReason.RESTART, created_by=None)
    branch = (release.source or {}).get("branch")
    record_event(
        deployment,
        "branch_moved",
        f"Branch {branch} moved to {(commit or 'a new commit')[:12]}: release {release.number} runs it.",
        {"number": release.number, "branch": branch, "commit": commit},
    )
    return release


def record_commit(deployment: Deployment, *, image: str, commit: str) -> None:
    """A build of the current release's image checked out `commit`: its `source.commit` says so."""
    release = current_release(deployment)
    if release is not None and release.image == image and release.source is not None:
        release.source = {**release.source, "commit": commit}
