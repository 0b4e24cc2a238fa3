"""Releases of a deployment: the list, one release with what changed since the one before, and rollback.

A release is recorded by `lifecycle.begin_release` whenever a rollout changes what runs (deploy,
restart with a change, rollback), and its status follows the deployment's (`lifecycle.settle_release`).
A rollback is a restart whose image and config come from an earlier release instead of the agent: it
uses the restart's rules (the statuses it is allowed from, quotas, a new generation rolled out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from deploy_service.errors import InvalidState, NotFound
from deploy_service.extensions import db
from deploy_service.models import Deployment, Principal, Release, ReleaseReason
from deploy_service.services import lifecycle, quotas
from deploy_service.services.common import Page, paginate
from deploy_service.services.deployments import (
    check_stored_git_origin,
    check_stored_image_origin,
    commit_action,
    get_deployment,
    on_fresh_state,
    roll_out,
)
from deploy_service.services.engine import require_engine
from deploy_service.services.secrets import secret_versions

HIDDEN_CONFIG = frozenset({"image", "source", "overrides", "secret_versions"})
"""Config keys a diff leaves out: `image` and `source` are the release's own fields, the deploy-time
overrides are already in the resolved `env` and `resources`, and a secret's version shows as `rotated`."""
ROTATED = "rotated"


@dataclass(frozen=True)
class Change:
    """One field that differs between two releases, by its flattened path (`config.env.MODE`)."""

    field: str
    before: Any
    after: Any


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into)
    else:
        into[prefix] = value


def flat_fields(release: Release) -> dict[str, Any]:
    """A release as `{path: value}`: `image`, `image_id`, `source.*`, and `config.*` (a secret's value is
    its name: releases hold secrets by name only)."""
    fields: dict[str, Any] = {"image": release.image, "image_id": release.image_id}
    for key, value in (release.source or {}).items():
        fields[f"source.{key}"] = value
    for key, value in (release.config or {}).items():
        if key not in HIDDEN_CONFIG:
            _flatten(f"config.{key}", value, fields)
    return fields


def changes(before: Release | None, after: Release) -> list[Change]:
    """What differs from `before` to `after`, path by path in order; none for a first release."""
    if before is None:
        return []
    old, new = flat_fields(before), flat_fields(after)
    found = [
        Change(field, old.get(field), new.get(field))
        for field in sorted(old.keys() | new.keys())
        if old.get(field) != new.get(field)
    ]
    return found + rotations(before, after)


def rotations(before: Release, after: Release) -> list[Change]:
    """`secrets.<name>: rotated` for each secret both releases use whose value was rotated in between (from its
    recorded version; never a value). A release recorded before versions were kept shows no rotation."""
    old = (before.config or {}).get("secret_versions") or {}
    new = (after.config or {}).get("secret_versions") or {}
    return [
        Change(f"secrets.{name}", None, ROTATED) for name in sorted(old.keys() & new.keys()) if old[name] != new[name]
    ]


class ReleaseDetail:
    """A release with its `changes` against the one before it (reads every other field from the release)."""

    def __init__(self, release: Release, found: list[Change]) -> None:
        self.release = release
        self.changes = found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.release, name)


def list_releases(actor: Principal, deployment_id: str, *, skip: int, limit: int) -> Page[Release]:
    """A deployment's releases, newest first.

    Raises:
        NotFound: no such deployment, or someone else's.
    """
    deployment = get_deployment(actor, deployment_id)
    stmt = select(Release).where(Release.deployment_id == deployment.id).order_by(Release.number.desc())
    return paginate(stmt, skip=skip, limit=limit)


def _release(deployment: Deployment, number: int) -> Release | None:
    return db.session.scalar(select(Release).where(Release.deployment_id == deployment.id, Release.number == number))


def get_release(actor: Principal, deployment_id: str, number: int) -> ReleaseDetail:
    """One release, with its changes against the release before it.

    Raises:
        NotFound: no such deployment (or someone else's), or no release of that number.
    """
    deployment = get_deployment(actor, deployment_id)
    release = _release(deployment, number)
    if release is None:
        raise NotFound("Release not found.", details={"release": number})
    return ReleaseDetail(release, changes(_release(deployment, number - 1), release))


def _target(deployment: Deployment, number: int | None) -> Release:
    """The release a rollback goes back to: `number`, else the newest before the current one that was active.

    Raises:
        NotFound: no release `number`.
        InvalidState: `number` is the current release, or there is nothing earlier to go back to.
    """
    current = deployment.revision
    if number is None:
        target: Release | None = db.session.scalar(
            select(Release)
            .where(
                Release.deployment_id == deployment.id,
                Release.number < current,
                Release.activated_at.is_not(None),
            )
            .order_by(Release.number.desc())
            .limit(1)
        )
        if target is None:
            raise InvalidState(
                "No earlier release was ever active: there is nothing to roll back to.",
                details={"status": deployment.status, "release": current},
            )
        return target
    if number == current:
        raise InvalidState(
            f"Release {number} is the current release: there is nothing to roll back.",
            details={"status": deployment.status, "release": number},
        )
    target = _release(deployment, number)
    if target is None:
        raise NotFound("Release not found.", details={"release": number})
    return target


@on_fresh_state
def rollback(actor: Principal, deployment_id: str, *, release: int | None = None) -> Deployment:
    """Roll the deployment out to an earlier release's image and config, as a new release (`rollback`).

    Allowed where a restart is (`running`/`ready`: rolling; `stopped`/`failed`: it starts again).

    Raises:
        NotFound: no such deployment (or someone else's), or no release `release`.
        InvalidState: 409 from deploying or killed, for the current release, or with nothing to go back to.
        ValidationFailed: the target's image or git host is one no agent may name any more.
        QuotaExceeded: the target's resources do not fit the owner's quota (admins are exempt).
        EngineUnavailable: nothing is written.
    """
    deployment = get_deployment(actor, deployment_id)
    mode = lifecycle.check_restart(deployment)
    target = _target(deployment, release)
    config = dict(target.config or {})
    # The target's secrets by name, at the versions they have now: a rollback runs today's values (a rotation
    # is never undone by it), and its release records what it runs.
    config["secret_versions"] = secret_versions(deployment.owner_id, (config.get("secrets") or {}).values())
    if config.get("source"):
        check_stored_git_origin(config["source"])
    else:
        check_stored_image_origin(target.image)
    require_engine()
    quotas.check_deployment(
        actor, deployment.owner_id, replicas=deployment.replicas_desired, config=config, replacing=deployment
    )
    number = lifecycle.next_release_number(deployment)
    roll_out(deployment, mode, "rollback_requested", f"Rollback to release {target.number} requested.")
    deployment.config = config
    deployment.image = target.image
    lifecycle.begin_release(
        deployment,
        number,
        ReleaseReason.ROLLBACK,
        created_by=actor.id,
        image_id=target.image_id,
        source=dict(target.source) if target.source is not None else None,
        rollback_of=target.number,
    )
    commit_action(deployment)
    return deployment
