"""Getting a deployment's image ready in the background: use a local image, pull it, or clone and build.

Pulls and builds can take minutes, so they never run inside a pass: the pass asks `Preparer.ensure`,
which starts at most one job per deployment on a small pool and returns. The job streams build output
into the deployment's stored, size-capped build log (flushed about twice a second, so it can be followed
live) and into `build_progress` events (step N/M), then marks the image ready — or records why it
could not be prepared (`image_error`: the planning step fails the deployment, or rolls a rolling update
back to the release that still serves) — and wakes the reconciler.

Only a leader prepares: `ensure` starts nothing while the process does not lead, and a job writes
nothing (log lines, events, the outcome) once the term it was started in has ended (`leadership.py`).

Builds run on a pool of their own, `BUILD_SLOTS` at once, and at most `BUILDS_PER_USER` of one user's
deployments at once, so that one tenant never holds every slot: `ensure` admits a build only when both
allow it, and otherwise tells the pass once that it waits (a `build_queued` event); the pass asks
again each tick, oldest deployment first, until a slot frees. Each build gets a `Cancellation`:
`cancel_all_but` (each pass, with the deployments still meant to run) cancels the builds of the
stopped and the deleted; the runner kills the clone or drops the engine build, the job records
`build_cancelled` and frees its slot, and nothing is marked ready or failed.

A git release that was built before (a rollback: its `source.commit` and `image_id` are known) runs its
own image again, tagged anew, while the engine still has it; once that image is gone it is built again
from its commit, never from the branch's head. After each build, the built images of all but the last
`RELEASE_IMAGES_KEPT` releases of the deployment are removed (never forced: one a container still uses
stays), with an `images_removed` event.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from deploy_service.errors import EngineUnavailable, NotFound
from deploy_service.extensions import db
from deploy_service.models import Agent, Deployment, DeploymentStatus, DesiredState, Release, ReleaseStatus
from deploy_service.reconciler.leadership import Leadership
from deploy_service.references import BUILT_IMAGE_REPOSITORY
from deploy_service.runner.base import (
    BuildCancelled,
    BuildFailed,
    BuildSpec,
    Cancellation,
    ImageInfo,
    ImageUnavailable,
    RegistryCredentials,
    Runner,
)
from deploy_service.services import lifecycle
from deploy_service.services.deployments import built_image_tag
from deploy_service.services.logs import append_build_log
from deploy_service.services.secrets import registry_credentials
from deploy_service.settings import settings_for

log = logging.getLogger(__name__)
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
FLUSH_SECONDS = 0.5


class Preparer:
    def __init__(
        self,
        app: Flask,
        runner: Runner,
        *,
        wake: Callable[[], None],
        leadership: Leadership | None = None,
        builds_per_user: int = 2,
        build_slots: int = 4,
        release_images_kept: int = 5,
    ) -> None:
        self.app = app
        self.runner = runner
        self.wake = wake
        self.leadership = leadership or Leadership(leading=True)
        """Whose leadership gates the work (the reconciler's own; by default, always leading)."""
        self.builds_per_user = builds_per_user
        self.build_slots = build_slots
        self.release_images_kept = release_images_kept
        """Built images of this many of a deployment's newest releases stay on the engine (`RELEASE_IMAGES_KEPT`)."""
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")
        self.build_pool = ThreadPoolExecutor(max_workers=build_slots, thread_name_prefix="build")
        self._in_flight: set[str] = set()
        self._builds: dict[str, tuple[str, Cancellation]] = {}
        """The builds running: deployment id → (its owner, its cancellation)."""
        self._waiting: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            builds = list(self._builds.values())
        for _, cancel in builds:
            cancel.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.build_pool.shutdown(wait=False, cancel_futures=True)

    def ensure(self, deployment_id: str, *, build_owner: str | None = None) -> str | None:
        """Start preparing the deployment's image unless that is under way or this process does not lead.

        Args:
            build_owner: the deployment's owner when its image is built from a git source (None: a pull).

        Returns:
            Why the build waits, the first time it is kept waiting for a slot (else None).
        """
        term = self.leadership.term()
        if term is None:
            return None
        cancel = Cancellation()
        with self._lock:
            if deployment_id in self._in_flight:
                return None
            if build_owner is not None:
                waits = self._why_wait(build_owner)
                if waits is not None:
                    first = deployment_id not in self._waiting
                    self._waiting.add(deployment_id)
                    return waits if first else None
                self._waiting.discard(deployment_id)
                self._builds[deployment_id] = (build_owner, cancel)
            self._in_flight.add(deployment_id)
        pool = self.pool if build_owner is None else self.build_pool
        pool.submit(self._run, deployment_id, term, cancel)
        return None

    def _why_wait(self, owner: str) -> str | None:
        """Why a build of `owner` may not start now (None: it may); called with the lock held."""
        owners = [running for running, _ in self._builds.values()]
        mine = owners.count(owner)
        if mine >= self.builds_per_user:
            return (
                f"Waiting for a build slot: {mine} builds of this user are running "
                f"(at most {self.builds_per_user} at once, BUILDS_PER_USER)."
            )
        if len(owners) >= self.build_slots:
            return f"Waiting for a build slot: all {self.build_slots} are in use (BUILD_SLOTS)."
        return None

    def cancel_all_but(self, wanted: set[str]) -> None:
        """Cancel the builds of deployments not in `wanted` (those still meant to run), and forget their waits."""
        with self._lock:
            cancels = [cancel for deployment_id, (_, cancel) in self._builds.items() if deployment_id not in wanted]
            self._waiting &= wanted
        for cancel in cancels:
            cancel.cancel()

    def _run(self, deployment_id: str, term: int, cancel: Cancellation) -> None:
        try:
            with self.app.app_context():
                self._prepare(deployment_id, term, cancel)
        except Exception:
            log.exception("preparing the image of %s failed", deployment_id)
        finally:
            with self._lock:
                self._in_flight.discard(deployment_id)
                self._builds.pop(deployment_id, None)
            self.wake()

    def _update(self, deployment_id: str, term: int, change: Callable[[Deployment], object]) -> bool:
        """Apply `change` to a fresh copy and commit, retrying when a concurrent writer won.

        Returns:
            False, writing nothing, when the deployment is gone or killed, or when `term` has ended.
        """
        for _ in range(5):
            db.session.rollback()
            if not self.leadership.holds(term):
                log.info("not writing the image preparation of %s: leadership was lost", deployment_id)
                return False
            deployment = db.session.get(Deployment, deployment_id, populate_existing=True)
            if deployment is None or deployment.status == DeploymentStatus.KILLED:
                return False
            try:
                change(deployment)
                db.session.commit()
                return True
            except StaleDataError:
                db.session.rollback()
        raise RuntimeError(f"deployment {deployment_id} kept changing under the preparer")

    def _prepare(self, deployment_id: str, term: int, cancel: Cancellation) -> None:
        deployment = db.session.get(Deployment, deployment_id)
        if deployment is None or deployment.image_ready or deployment.desired_state != DesiredState.RUNNING:
            return
        if deployment.image_error is not None:
            # This rollout's image failed already: the planner fails it or rolls it back (and a new rollout
            # clears the error). A pass planned before the failure was written may still ask again: no retry.
            return
        config: dict[str, Any] = dict(deployment.config)
        image = str(deployment.image)
        release = lifecycle.current_release(deployment)
        try:
            auth = self._credentials(deployment, config)
            if config.get("source"):
                commit = (release.source or {}).get("commit") if release is not None else None
                moved_to = self._branch_moved(deployment, release, config["source"], commit, term)
                if moved_to is not None:  # built from the branch's head, as the next release's image
                    commit, image = None, moved_to
                info = self._own_image(release, image, commit) or self._build(
                    deployment_id, term, config["source"], image, cancel, auth=auth, commit=commit
                )
            else:
                info = self.runner.ensure_image(image, auth=auth)
        except EngineUnavailable:
            log.warning("engine unavailable while preparing %s; will retry", deployment_id)
            return
        except BuildCancelled:
            log.info("the build of %s was cancelled", deployment_id)
            self._update(
                deployment_id,
                term,
                lambda d: lifecycle.record_event(
                    d, "build_cancelled", "The build was cancelled: the deployment is no longer meant to run.", {}
                ),
            )
            return
        except (ImageUnavailable, BuildFailed) as exc:
            self._update(deployment_id, term, self._failure(exc, built=bool(config.get("source"))))
            return
        except NotFound as exc:
            missing = ImageUnavailable(f"{exc.message} Set the agent's registry_auth again, then restart.")
            self._update(deployment_id, term, self._failure(missing, built=bool(config.get("source"))))
            return

        built = bool(config.get("source"))
        pinned = release.image_id if release is not None else None
        checked = release.number if release is not None else None
        try:
            pinned_present = pinned is None or pinned == info.id or self.runner.local_image(pinned) is not None
        except EngineUnavailable:
            log.warning("engine unavailable while preparing %s; will retry", deployment_id)
            return

        def ready(d: Deployment) -> None:
            if built and info.ref != d.image and d.revision == checked:  # the branch moved (`_branch_moved`)
                lifecycle.branch_moved(d, image=info.ref, commit=info.commit)
            gone = lifecycle.pin_image(d, info.id, built=built, pinned_present=pinned_present)
            if gone is not None:
                self._failure(ImageUnavailable(gone), built=built)(d)
                return
            d.image_ready, d.image_error = True, None
            data = {"image": info.ref, "source": info.source}
            if info.commit is not None:
                data["commit"] = info.commit
                lifecycle.record_commit(d, image=info.ref, commit=info.commit)
            lifecycle.record_event(d, "image_ready", f"Image {info.ref} is ready ({info.source}).", data)

        if self._update(deployment_id, term, ready) and built:
            self._remove_old_images(deployment_id, term)

    def _branch_moved(
        self, deployment: Deployment, release: Release | None, source: dict[str, Any], commit: str | None, term: int
    ) -> str | None:
        """For a restart that changed nothing (the current release is active and was built): whether its branch
        has moved since, asked of the repository without cloning. Returns the tag the next release's image is
        built into when it has; None when it has not, or when the repository could not be asked (an event says
        so, and the release's own commit runs again).
        """
        if release is None or release.status != ReleaseStatus.ACTIVE or commit is None:
            return None
        settings = settings_for(self.app)
        spec = BuildSpec(
            git_url=source["git_url"],
            branch=source.get("branch", "main"),
            tag=str(deployment.image),
            allow_local=settings.agents.allow_local_git_sources,
            clone_timeout=settings.runner.clone_timeout,
        )
        try:
            head = self.runner.branch_head(spec)
        except BuildFailed as exc:
            message = (
                f"Could not ask {spec.git_url} where {spec.branch} is now ({exc.message}): release "
                f"{release.number}'s commit {commit[:12]} runs again."
            )
            deployment_id, number, error = deployment.id, release.number, exc.message
            self._update(
                deployment_id,
                term,
                lambda d: lifecycle.record_event(
                    d, "branch_unchecked", message, {"number": number, "commit": commit, "error": error}
                ),
            )
            return None
        if head == commit:
            return None
        return built_image_tag(deployment.agent_id, deployment.id, lifecycle.next_release_number(deployment))

    def _own_image(self, release: Release | None, tag: str, commit: str | None) -> ImageInfo | None:
        """A git release built before runs the image it ran then, tagged `tag` again, if the engine has it.

        Raises:
            EngineUnavailable: the engine did not answer.
        """
        if release is None or release.image_id is None or commit is None:
            return None
        if self.runner.local_image(release.image_id) is None:
            return None
        try:
            self.runner.tag_image(release.image_id, tag)
        except ImageUnavailable as exc:  # removed meanwhile, or refused: built again from its commit
            log.info("release %s's image cannot be tagged again (%s); building it again", release.number, exc)
            return None
        return ImageInfo(ref=tag, id=release.image_id, source="local", commit=commit)

    def _remove_old_images(self, deployment_id: str, term: int) -> None:
        """Remove the built images of the deployment's releases past the newest `release_images_kept`.

        The current and the active release keep theirs wherever they are; a tag several releases share (a
        rollback runs its target's) stays while one of them is kept. A removal the engine refuses (a
        container still uses the image) or that fails is left for the next build.
        """
        releases = db.session.scalars(
            select(Release).where(Release.deployment_id == deployment_id).order_by(Release.number.desc())
        ).all()
        built = [r for r in releases if r.source and r.image and r.image.startswith(BUILT_IMAGE_REPOSITORY + "/")]
        kept = {r.image for r in built[: self.release_images_kept]} | {
            r.image for r in built if r.status in (ReleaseStatus.PENDING, ReleaseStatus.ACTIVE)
        }
        removed: list[str] = []
        for ref in sorted({str(r.image) for r in built[self.release_images_kept :]} - kept):
            try:
                if self.runner.remove_image(ref):
                    removed.append(ref)
            except (EngineUnavailable, ImageUnavailable) as exc:
                log.warning("could not remove the old release image %s: %s", ref, exc)
        if removed:
            self._update(
                deployment_id,
                term,
                lambda d: lifecycle.record_event(
                    d,
                    "images_removed",
                    f"Removed {len(removed)} image(s) of releases older than the last "
                    f"{self.release_images_kept} (RELEASE_IMAGES_KEPT); a rollback to one builds it again "
                    "from its commit.",
                    {"images": removed},
                ),
            )

    @staticmethod
    def _credentials(deployment: Deployment, config: dict[str, Any]) -> RegistryCredentials | None:
        """The agent's registry login as it is now (a rotated password counts from the next pull or build).

        Raises:
            NotFound: its password secret is gone.
        """
        agent = db.session.get(Agent, deployment.agent_id)
        if agent is None:
            return None
        return registry_credentials(deployment.owner_id, agent.registry_auth, image=config.get("image"))

    def _failure(self, error: ImageUnavailable | BuildFailed, *, built: bool) -> Callable[[Deployment], None]:
        max_bytes = settings_for(self.app).logs.build_log_max_bytes
        line_max = settings_for(self.app).logs.line_max_bytes

        def fail(d: Deployment) -> None:
            if error.log and not built:
                append_build_log(d, error.log.splitlines(), max_bytes=max_bytes, line_max_bytes=line_max)
            kind = "build_failed" if isinstance(error, BuildFailed) else "image_unavailable"
            lifecycle.record_event(d, kind, error.message)
            d.image_error = error.message  # the planner fails the deployment, or rolls an update back

        return fail

    def _build(
        self,
        deployment_id: str,
        term: int,
        source: dict[str, Any],
        tag: str,
        cancel: Cancellation,
        *,
        auth: RegistryCredentials | None,
        commit: str | None = None,
    ) -> ImageInfo:
        settings = settings_for(self.app)
        max_bytes = settings.logs.build_log_max_bytes
        line_max = settings.logs.line_max_bytes
        pending: list[str] = []
        steps: list[tuple[int, int, str]] = []
        last_flush = [time.monotonic()]
        flush_lock = threading.Lock()

        def flush() -> None:
            with flush_lock:
                lines, pending[:] = list(pending), []
                found, steps[:] = list(steps), []
            if not lines and not found:
                return

            def change(d: Deployment) -> None:
                append_build_log(d, lines, max_bytes=max_bytes, line_max_bytes=line_max)
                for step, total, text in found:
                    lifecycle.record_event(
                        d, "build_progress", f"Build step {step}/{total}: {text}", {"step": step, "total": total}
                    )

            if not self._update(deployment_id, term, change):
                cancel.cancel()  # deleted, or leadership lost: nobody wants this build any more
            last_flush[0] = time.monotonic()

        def on_output(line: str) -> None:
            with flush_lock:
                pending.append(line)
                match = STEP.match(line.strip())
                if match:
                    steps.append((int(match.group(1)), int(match.group(2)), match.group(3)[:200]))
            if time.monotonic() - last_flush[0] >= FLUSH_SECONDS:
                flush()

        where = f"commit {commit}" if commit else source.get("branch", "main")
        self._update(
            deployment_id,
            term,
            lambda d: lifecycle.record_event(
                d,
                "build_started",
                f"Cloning {source['git_url']} ({where}) and building.",
                {"commit": commit} if commit else {},
            ),
        )
        spec = BuildSpec(
            git_url=source["git_url"],
            branch=source.get("branch", "main"),
            dockerfile=source.get("dockerfile", "Dockerfile"),
            context=source.get("context", "."),
            tag=tag,
            allow_local=settings.agents.allow_local_git_sources,
            clone_timeout=settings.runner.clone_timeout,
            build_timeout=settings.runner.build_timeout,
            registry_auth=auth,
            commit=commit,
        )
        try:
            return self.runner.build_image(spec, on_output=on_output, cancel=cancel)
        finally:
            flush()
