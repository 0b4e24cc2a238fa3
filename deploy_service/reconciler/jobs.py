"""The jobs of the reconciler's loop: converge, sample resources, deliver webhooks.

Each job is run by the loop when due, in an app context of its own, and answers how many seconds it
wants until its next run; an exception is the loop's to log and retry. None of them needs another: they
share the database, and `RecentOom` (the executor notes OOM kills; the sampling round's alert rules
read them).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentStatus
from deploy_service.reconciler.dispatch import Dispatcher
from deploy_service.reconciler.executor import Executor
from deploy_service.reconciler.sampling import RecentOom, Sampler
from deploy_service.reconciler.settings import ReconcileSettings
from deploy_service.runner.base import Runner
from deploy_service.services import alerts

log = logging.getLogger(__name__)


class Job(Protocol):
    name: str

    def run(self) -> float:
        """Do the work that is due; seconds until the job wants to run again."""

    def close(self) -> None:
        """Release threads and connections."""


class ConvergeJob:
    """One reconcile pass (`executor.Executor`)."""

    name = "converge"

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def run(self) -> float:
        return self.executor.run_pass()

    def close(self) -> None:
        self.executor.close()


class SampleJob:
    """Every `METRICS_SAMPLE_SECONDS`: one-shot stats of each running replica, then the telemetry alerts."""

    name = "sample"

    def __init__(self, runner: Runner, settings: ReconcileSettings, *, oom: RecentOom, alert_window: float) -> None:
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="sample")
        self.sampler = Sampler(runner, settings, self.pool)
        self.oom = oom
        self.alert_window = alert_window
        self.settings = settings

    def run(self) -> float:
        if self.sampler.seconds_until_due() > 0:
            return self.sampler.seconds_until_due()
        deployments = list(
            db.session.scalars(
                select(Deployment)
                .where(Deployment.status != DeploymentStatus.KILLED)
                .options(selectinload(Deployment.instances))
            ).all()
        )
        try:
            if self.sampler.maybe_sample(deployments):
                known = alerts.open_alerts()
                recent = self.oom.within(self.alert_window)
                for deployment in deployments:
                    alerts.evaluate_telemetry(deployment, known, oom_recently=deployment.id in recent)
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
        return max(self.sampler.seconds_until_due(), self.settings.tick)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DispatchJob:
    """Start sending every due webhook delivery (in the background: a slow receiver never blocks the loop)."""

    name = "dispatch"

    def __init__(self, app: Flask, settings: ReconcileSettings) -> None:
        self.dispatcher = Dispatcher(app)
        self.settings = settings

    def run(self) -> float:
        due = self.dispatcher.dispatch_due()
        return self.settings.resync if due is None else max(due, self.settings.tick)

    def close(self) -> None:
        self.dispatcher.close()
