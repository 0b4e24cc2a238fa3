"""The loop's jobs: what the leader does, each on its own schedule.

A job is a small object with a `name`, `run() -> float` (do one round; return seconds until it wants
to run again; may raise) and `close()`. The loop (`loop.py`) runs every due job while it leads, and
owns what happens when one raises (logged once per outage, retried with backoff). Today there is one
job, `ConvergeJob`, a converge pass (which also samples and dispatches webhooks); adding a job is
adding it to `Reconciler.jobs`.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from flask import Flask

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.models.types import utcnow
from deploy_service.observability import RECONCILE_PASS
from deploy_service.reconciler.converge import Converger
from deploy_service.reconciler.heartbeat import Heartbeat
from deploy_service.reconciler.timing import engine_retry_delay

log = logging.getLogger(__name__)


class Job(Protocol):
    """One kind of background work the leading reconciler does."""

    name: str

    def run(self) -> float:
        """Do one round; returns seconds until the job wants to run again. May raise."""
        ...

    def close(self) -> None:
        """Release threads and connections; the job is not run again."""
        ...


class ConvergeJob:
    """A converge pass, backing off while the engine is down, recording each completed pass."""

    name = "converge"

    def __init__(self, app: Flask, converger: Converger, *, heartbeat: Heartbeat, engine_backoff_max: float) -> None:
        self.app = app
        self.converger = converger
        self.heartbeat = heartbeat
        self.engine_backoff_max = engine_backoff_max
        self.passes = 0
        """Passes attempted (completed or not)."""
        self.engine_failures = 0
        """Consecutive passes the engine did not answer."""

    def pass_once(self) -> float:
        """One pass in a fresh app context, recorded in the heartbeat; returns seconds until the next.

        Raises:
            EngineUnavailable: the engine did not answer (nothing changed).
        """
        started = time.perf_counter()
        with self.app.app_context():
            try:
                wanted = self.converger.run_pass()
                self.heartbeat.beat()
                return wanted
            finally:
                db.session.remove()
                self.passes += 1
                RECONCILE_PASS.observe(time.perf_counter() - started)

    def run(self) -> float:
        """A pass; while the engine does not answer, the engine backoff instead of an error.

        Raises:
            Exception: anything else that failed the pass (the database did not answer, a defect).
        """
        try:
            wanted = self.pass_once()
        except EngineUnavailable as exc:
            self.engine_failures += 1
            self.converger.engine_failed_at = utcnow()
            if self.engine_failures == 1:
                log.warning("container engine unavailable (%s); backing off", exc.message)
            return engine_retry_delay(self.engine_failures, base=1.0, maximum=self.engine_backoff_max)
        if self.engine_failures:
            log.info("container engine is back after %d failed passes", self.engine_failures)
            self.engine_failures = 0
        return wanted

    def close(self) -> None:
        self.converger.close()
