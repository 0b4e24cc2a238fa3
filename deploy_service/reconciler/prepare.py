"""Getting a deployment's image ready in the background: use a local image, pull it, or clone and build.

Pulls and builds can take minutes, so they never run inside a pass: the pass asks `Preparer.ensure`,
which starts at most one job per deployment on a small pool and returns. The job streams build output
into the deployment's stored, size-capped build log (flushed about twice a second, so it can be followed
live) and into `build_progress` events (step N/M), then marks the image ready — or the deployment
`failed` with the reason — and wakes the reconciler.

Only a leader prepares: `ensure` starts nothing while the process does not lead, and a job writes
nothing (log lines, events, the outcome) once the term it was started in has ended (`leadership.py`).
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
from sqlalchemy.orm.exc import StaleDataError

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentStatus, DesiredState
from deploy_service.reconciler.leadership import Leadership
from deploy_service.runner.base import BuildFailed, BuildSpec, ImageInfo, ImageUnavailable, Runner
from deploy_service.services import lifecycle
from deploy_service.services.logs import append_build_log
from deploy_service.settings import settings_for

log = logging.getLogger(__name__)
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
FLUSH_SECONDS = 0.5


class Preparer:
    def __init__(
        self, app: Flask, runner: Runner, *, wake: Callable[[], None], leadership: Leadership | None = None
    ) -> None:
        self.app = app
        self.runner = runner
        self.wake = wake
        self.leadership = leadership or Leadership(leading=True)
        """Whose leadership gates the work (the reconciler's own; by default, always leading)."""
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def ensure(self, deployment_id: str) -> None:
        """Start preparing the deployment's image unless that is under way or this process does not lead."""
        term = self.leadership.term()
        if term is None:
            return
        with self._lock:
            if deployment_id in self._in_flight:
                return
            self._in_flight.add(deployment_id)
        self.pool.submit(self._run, deployment_id, term)

    def _run(self, deployment_id: str, term: int) -> None:
        try:
            with self.app.app_context():
                self._prepare(deployment_id, term)
        except Exception:
            log.exception("preparing the image of %s failed", deployment_id)
        finally:
            with self._lock:
                self._in_flight.discard(deployment_id)
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

    def _prepare(self, deployment_id: str, term: int) -> None:
        deployment = db.session.get(Deployment, deployment_id)
        if deployment is None or deployment.image_ready or deployment.desired_state != DesiredState.RUNNING:
            return
        config: dict[str, Any] = dict(deployment.config)
        image = str(deployment.image)
        try:
            if config.get("source"):
                info = self._build(deployment_id, term, config["source"], image)
            else:
                info = self.runner.ensure_image(image)
        except EngineUnavailable:
            log.warning("engine unavailable while preparing %s; will retry", deployment_id)
            return
        except (ImageUnavailable, BuildFailed) as exc:
            self._update(deployment_id, term, self._failure(exc, built=bool(config.get("source"))))
            return

        def ready(d: Deployment) -> None:
            d.image_ready = True
            lifecycle.record_event(
                d,
                "image_ready",
                f"Image {info.ref} is ready ({info.source}).",
                {"image": info.ref, "source": info.source},
            )

        self._update(deployment_id, term, ready)

    def _failure(self, error: ImageUnavailable | BuildFailed, *, built: bool) -> Callable[[Deployment], None]:
        max_bytes = settings_for(self.app).logs.build_log_max_bytes
        line_max = settings_for(self.app).logs.line_max_bytes

        def fail(d: Deployment) -> None:
            if error.log and not built:
                append_build_log(d, error.log.splitlines(), max_bytes=max_bytes, line_max_bytes=line_max)
            kind = "build_failed" if isinstance(error, BuildFailed) else "image_unavailable"
            lifecycle.record_event(d, kind, error.message)
            if d.status in (DeploymentStatus.DEPLOYING, DeploymentStatus.RUNNING, DeploymentStatus.READY):
                lifecycle.transition(d, DeploymentStatus.FAILED, error.message, error=error.message)

        return fail

    def _build(self, deployment_id: str, term: int, source: dict[str, Any], tag: str) -> ImageInfo:
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

            self._update(deployment_id, term, change)
            last_flush[0] = time.monotonic()

        def on_output(line: str) -> None:
            with flush_lock:
                pending.append(line)
                match = STEP.match(line.strip())
                if match:
                    steps.append((int(match.group(1)), int(match.group(2)), match.group(3)[:200]))
            if time.monotonic() - last_flush[0] >= FLUSH_SECONDS:
                flush()

        self._update(
            deployment_id,
            term,
            lambda d: lifecycle.record_event(
                d, "build_started", f"Cloning {source['git_url']} ({source.get('branch', 'main')}) and building.", {}
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
        )
        try:
            return self.runner.build_image(spec, on_output=on_output)
        finally:
            flush()
