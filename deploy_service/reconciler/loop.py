"""The reconciler's loop: leadership, wake-ups, resyncs and backing off while the engine is down.

Embedded in `python app.py` as a daemon thread, or run alone by `flask reconcile` next to gunicorn.
Whichever way, a leader lock makes exactly one active; the others stand by and take over if it dies.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.models.types import utcnow
from deploy_service.observability import RECONCILE_PASS
from deploy_service.reconciler.executor import Executor
from deploy_service.reconciler.jobs import ConvergeJob, DispatchJob, Job, SampleJob
from deploy_service.reconciler.lock import LeaderLock
from deploy_service.reconciler.sampling import RecentOom
from deploy_service.reconciler.settings import ReconcileSettings
from deploy_service.reconciler.timing import engine_retry_delay
from deploy_service.reconciler.wakeup import Waiter
from deploy_service.runner.base import Runner
from deploy_service.services.engine import EXTENSION_KEY
from deploy_service.services.notify import local_wakeup

log = logging.getLogger(__name__)
STANDBY_RETRY_SECONDS = 2.0


class Reconciler:
    def __init__(self, app: Flask, *, runner: Runner | None = None, settings: ReconcileSettings | None = None) -> None:
        self.app = app
        self.runner: Runner = runner or app.extensions[EXTENSION_KEY]
        self.settings = settings or ReconcileSettings.from_config(app.config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.engine_failures = 0
        oom = RecentOom()
        self.executor = Executor(app, self.runner, self.settings, wake=local_wakeup.set, oom=oom)
        self.jobs: list[Job] = [
            ConvergeJob(self.executor),
            SampleJob(self.runner, self.settings, oom=oom, alert_window=app.config["ALERT_WINDOW_MINUTES"] * 60),
            DispatchJob(app, self.settings),
        ]

    def run_once(self) -> float:
        """One pass, then the other jobs, each in a fresh app context; seconds until the next pass is wanted.

        Raises:
            EngineUnavailable: the engine did not answer (nothing changed).
        """
        started = time.perf_counter()
        with self.app.app_context():
            try:
                wanted = self.jobs[0].run()
            finally:
                db.session.remove()
                self.passes += 1
                RECONCILE_PASS.observe(time.perf_counter() - started)
        for job in self.jobs[1:]:
            with self.app.app_context():
                try:
                    wanted = min(wanted, job.run())
                except EngineUnavailable:
                    raise
                except Exception:
                    log.exception("the %s job failed", job.name)
                finally:
                    db.session.remove()
        return max(wanted, 0.01)

    def close(self) -> None:
        """Stop the jobs' threads (the loop does it when it ends)."""
        for job in self.jobs:
            job.close()

    def run_forever(self) -> None:
        """Lead (or stand by) and reconcile until `stop()`."""
        with self.app.app_context():
            engine = db.engine
        lock = LeaderLock(engine)
        waiter = Waiter(engine)
        leading = False
        try:
            while not self._stop.is_set():
                if not lock.try_acquire():
                    if leading:
                        log.warning("reconciler lost leadership; standing by")
                    leading = False
                    self._stop.wait(STANDBY_RETRY_SECONDS)
                    continue
                if not leading:
                    log.info("reconciler is the leader")
                    leading = True
                waiter.wait(self._step())
        finally:
            waiter.close()
            lock.release()
            self.close()

    def _step(self) -> float:
        try:
            wanted = self.run_once()
        except EngineUnavailable as exc:
            self.engine_failures += 1
            self.executor.engine_failed_at = utcnow()
            delay = engine_retry_delay(
                self.engine_failures, base=1.0, maximum=self.app.config["ENGINE_BACKOFF_MAX_SECONDS"]
            )
            if self.engine_failures == 1:
                log.warning("container engine unavailable (%s); backing off", exc.message)
            return delay
        except Exception:
            log.exception("reconcile pass failed")
            return self.settings.tick
        if self.engine_failures:
            log.info("container engine is back after %d failed passes", self.engine_failures)
            self.engine_failures = 0
        return wanted

    def start(self) -> threading.Thread:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self.run_forever, name="reconciler", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        local_wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
