"""The loop's jobs: what the leader does, each on its own schedule.

A job is a small object with a `name`, `run() -> float` (do one round; return seconds until it wants
to run again; may raise) and `close()`. The loop (`loop.py`) runs every due job while it leads, and
owns what happens when one raises (logged once per outage, retried with backoff). The jobs:

- `ConvergeJob`: a reconcile pass (`executor.Executor`), backing off while the engine is down;
- `SampleJob`: every `METRICS_SAMPLE_SECONDS`, one-shot stats of each running replica, then the
  telemetry alert rules (they read `RecentOom`, which the executor notes OOM kills in);
- `DispatchJob`: starts sending every due webhook delivery, in the background;
- `PruneLogsJob`: every `LOG_PRUNE_SECONDS`, deletes the stored lines of removed containers older than
  `LOG_RETENTION_DAYS`;
- `PruneInvocationsJob`: every `INVOCATION_PRUNE_SECONDS`, deletes the records of `interact` calls older
  than `INVOCATION_RETENTION_DAYS`.

None needs another; adding a job is adding it to `Reconciler.jobs`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentStatus
from deploy_service.models.types import utcnow
from deploy_service.observability import RECONCILE_PASS
from deploy_service.reconciler.dispatch import Dispatcher
from deploy_service.reconciler.executor import Executor
from deploy_service.reconciler.heartbeat import Heartbeat
from deploy_service.reconciler.leadership import Leadership
from deploy_service.reconciler.sampling import RecentOom, Sampler
from deploy_service.reconciler.settings import ReconcileSettings
from deploy_service.reconciler.timing import engine_retry_delay
from deploy_service.runner.base import Runner
from deploy_service.services import alerts, invocations, stored_logs

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

    def __init__(self, app: Flask, executor: Executor, *, heartbeat: Heartbeat, engine_backoff_max: float) -> None:
        self.app = app
        self.executor = executor
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
                wanted = self.executor.run_pass()
                self.heartbeat.beat(time.perf_counter() - started)
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
            self.executor.engine_failed_at = utcnow()
            if self.engine_failures == 1:
                log.warning("container engine unavailable (%s); backing off", exc.message)
            return engine_retry_delay(self.engine_failures, base=1.0, maximum=self.engine_backoff_max)
        if self.engine_failures:
            log.info("container engine is back after %d failed passes", self.engine_failures)
            self.engine_failures = 0
        return wanted

    def close(self) -> None:
        self.executor.close()


class SampleJob:
    """Every `METRICS_SAMPLE_SECONDS`: one-shot stats of each running replica, then the telemetry alerts."""

    name = "sample"

    def __init__(
        self, app: Flask, runner: Runner, settings: ReconcileSettings, *, oom: RecentOom, alert_window: float
    ) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="sample")
        self.sampler = Sampler(runner, settings, self.pool)
        self.oom = oom
        self.alert_window = alert_window
        self.settings = settings

    def run(self) -> float:
        if self.sampler.seconds_until_due() > 0:
            return self.sampler.seconds_until_due()
        with self.app.app_context():
            try:
                deployments = list(
                    db.session.scalars(
                        select(Deployment)
                        .where(Deployment.status != DeploymentStatus.KILLED)
                        .options(selectinload(Deployment.instances))
                    ).all()
                )
                if self.sampler.maybe_sample(deployments):
                    known = alerts.open_alerts()
                    recent = self.oom.within(self.alert_window)
                    for deployment in deployments:
                        alerts.evaluate_telemetry(deployment, known, oom_recently=deployment.id in recent)
                db.session.commit()
            except Exception:
                db.session.rollback()
                raise
            finally:
                db.session.remove()
        return max(self.sampler.seconds_until_due(), self.settings.tick)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DispatchJob:
    """Start sending every due webhook delivery (in the background: a slow receiver never blocks the loop)."""

    name = "dispatch"

    def __init__(self, app: Flask, settings: ReconcileSettings, *, leadership: Leadership | None = None) -> None:
        self.app = app
        self.dispatcher = Dispatcher(app, leadership=leadership)
        self.settings = settings

    def run(self) -> float:
        with self.app.app_context():
            try:
                due = self.dispatcher.dispatch_due()
            finally:
                db.session.remove()
        return self.settings.resync if due is None else max(due, self.settings.tick)

    def close(self) -> None:
        self.dispatcher.close()


class _PruneJob:
    """Every `every` seconds (at once when the job starts): delete what `prune` finds past its retention, in
    one transaction, and log how much went."""

    name = "prune"
    what = "row(s)"

    def __init__(self, app: Flask, settings: ReconcileSettings) -> None:
        self.app = app
        self.settings = settings
        self.next_at = 0.0
        """`time.monotonic()` of the next round."""

    def every(self) -> float:
        raise NotImplementedError

    def prune(self) -> int:
        """Delete what is past its retention (in the job's app context); how much went."""
        raise NotImplementedError

    def run(self) -> float:
        wait = self.next_at - time.monotonic()
        if wait > 0:
            return wait
        with self.app.app_context():
            try:
                pruned = self.prune()
                db.session.commit()
            except Exception:
                db.session.rollback()
                raise
            finally:
                db.session.remove()
        if pruned:
            log.info("deleted %d %s past their retention", pruned, self.what)
        self.next_at = time.monotonic() + self.every()
        return self.every()

    def close(self) -> None:
        """Nothing to release."""


class PruneLogsJob(_PruneJob):
    """Every `LOG_PRUNE_SECONDS`: delete the stored lines of removed containers past `LOG_RETENTION_DAYS`."""

    name = "prune-logs"
    what = "container(s)' stored logs"

    def every(self) -> float:
        return self.settings.log_prune_every

    def prune(self) -> int:
        return stored_logs.prune(retention_days=self.settings.log_retention_days)


class PruneInvocationsJob(_PruneJob):
    """Every `INVOCATION_PRUNE_SECONDS`: delete the records of calls past `INVOCATION_RETENTION_DAYS`."""

    name = "prune-invocations"
    what = "invocation record(s)"

    def every(self) -> float:
        return self.settings.invocation_prune_every

    def prune(self) -> int:
        return invocations.prune(retention_days=self.settings.invocation_retention_days)
