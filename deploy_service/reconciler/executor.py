"""The executor: one reconcile pass, carrying out what the planning step decided.

A pass reads what the engine runs (one driver observation), then every live deployment with its slots
(one query), removes orphans, and per deployment, in a transaction of its own (`apply.DeploymentRun`):

1. `plan.plan_replicas` decides from values alone; the executor carries the actions out: database writes
   (slots, counters, events, transitions) here, engine calls through the driver (`drivers.py`);
2. the due HTTP health checks run (`health.py`);
3. `plan.plan_status` derives the status from the slots as they are now and applies the progress deadline.

The lines of every container a pass removes (`drivers.KeptLogs`) are stored before the container goes
(`services.stored_logs`; the driver hands them to `Executor.keep` between reading and removing): an
orphan's at once, in a transaction of their own; those of a deployment's run in its transaction, so the
status that says `stopped` (or the restart, or the replacement) and the lines commit together. A
deployment whose commit loses to the API's write (and is converged again next pass) still keeps them:
they are stored alone after its rollback.

The pass is level-triggered and idempotent: it looks at everything each time and acts only where the two
differ, so running it twice, or after a crash of the service, changes nothing more. Image preparation
runs in the background (`prepare.py`); resource sampling and webhook deliveries are jobs of the loop of
their own (`jobs.py`), never members of a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.exc import StaleDataError

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentStatus, DesiredState
from deploy_service.reconciler import plan as p
from deploy_service.reconciler.apply import DeploymentRun
from deploy_service.reconciler.drivers import Driver, KeptLogs, Observation, driver_for
from deploy_service.reconciler.health import HealthChecker
from deploy_service.reconciler.leadership import Leadership
from deploy_service.reconciler.prepare import Preparer
from deploy_service.reconciler.sampling import RecentOom
from deploy_service.reconciler.settings import ReconcileSettings
from deploy_service.runner.base import Runner
from deploy_service.services import alerts, stored_logs

log = logging.getLogger(__name__)
MAX_UNSTORED_LOGS = 1000
"""Containers' lines kept in memory while the database refuses them; past that, the oldest are dropped."""


def rules_for(settings: ReconcileSettings, driver: Driver) -> p.Rules:
    """The planner's rules: the reconciler's settings and the driver's trait."""
    return p.Rules(
        engine_keeps_replicas=driver.engine_keeps_replicas,
        tick=settings.tick,
        resync=settings.resync,
        progress_deadline=settings.progress_deadline,
        backoff_base=settings.backoff_base,
        backoff_max=settings.backoff_max,
        restart_budget=settings.restart_budget,
        stable_seconds=settings.stable_seconds,
        max_replicas=driver.max_replicas,
        auto_rollback=settings.auto_rollback,
        max_surge=settings.max_surge,
    )


class Executor:
    """Runs passes. One instance lives as long as the reconciler (it keeps health-check schedules)."""

    def __init__(
        self,
        app: Flask,
        runner: Runner,
        settings: ReconcileSettings,
        *,
        wake: Callable[[], None],
        oom: RecentOom | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="reconcile")
        self.driver = driver_for(runner, settings, self.pool, keep=self.keep)
        self.rules = rules_for(settings, self.driver)
        self.preparer = Preparer(
            app,
            runner,
            wake=wake,
            leadership=leadership,
            builds_per_user=settings.builds_per_user,
            build_slots=settings.build_slots,
            release_images_kept=settings.release_images_kept,
        )
        self.health = HealthChecker(settings, self.pool)
        self.oom = oom or RecentOom()
        self.open_alerts: alerts.OpenAlerts = {}
        self.engine_failed_at: datetime | None = None
        """The last pass the engine did not answer: a rollout's deadline never counts the outage."""
        self.kept_logs: list[KeptLogs] = []
        """Lines of removed containers not stored yet."""
        self._in_run: list[KeptLogs] | None = None
        """Lines flushed into the running deployment's transaction (None outside a run)."""

    def close(self) -> None:
        self.preparer.close()
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- the pass ---------------------------------------------------------------------------------

    def run_pass(self) -> float:
        """Converge every live deployment once; returns seconds until the next pass is wanted.

        Each deployment is committed on its own, and objects are not expired by those commits: the pass
        read every deployment once at its start, and reloading each one after its neighbour's commit
        doubled the pass time at 200 replicas. A deployment changed meanwhile by the API still fails
        its optimistic `version` check (StaleDataError below) and is converged again next pass.

        Raises:
            EngineUnavailable: the engine did not answer (nothing was changed).
        """
        db.session().expire_on_commit = False
        observation = self.driver.observe()
        deployments = self._live_deployments()
        self.preparer.cancel_all_but({d.id for d in deployments if d.desired_state == DesiredState.RUNNING})
        self.driver.remove_orphans(observation, {deployment.id for deployment in deployments})
        self._store_logs()
        observation.used_ports |= {i.port for d in deployments for i in d.instances if i.port}
        next_pass = self.settings.resync
        self.open_alerts = alerts.open_alerts()
        for deployment in deployments:
            next_pass = min(next_pass, self._converge_committed(deployment, observation))
            self._store_logs()
        self.health.forget_all_but(observation.containers)
        return max(next_pass, 0.01)

    def _live_deployments(self) -> list[Deployment]:
        return list(
            db.session.scalars(
                select(Deployment)
                .where(Deployment.status != DeploymentStatus.KILLED)
                .options(selectinload(Deployment.instances))
                .order_by(Deployment.created_at)
            ).all()
        )

    def keep(self, kept: Sequence[KeptLogs]) -> None:
        """Store the lines of containers about to be removed (the driver's `keep`); never raises.

        Within a deployment's run they join its transaction; outside one they are committed at once.
        Lines the database refuses are kept here and tried again.
        """
        if self._in_run is None:
            self.kept_logs.extend(kept)
            self._store_logs()
            return
        self._in_run.extend(kept)
        try:
            stored_logs.keep(kept)
        except Exception:  # noqa: BLE001 - the run fails at its commit; the lines are stored after the rollback
            log.exception("storing the logs of %d container(s) in their deployment's transaction failed", len(kept))

    def _store_logs(self) -> None:
        """Store the lines of removed containers and commit; kept for the next try if the database refuses."""
        if not self.kept_logs:
            return
        try:
            stored_logs.keep(self.kept_logs)
            db.session.commit()
        except Exception:
            db.session.rollback()
            log.exception("storing the logs of %d removed container(s) failed; retried next pass", len(self.kept_logs))
            del self.kept_logs[:-MAX_UNSTORED_LOGS]
            return
        self.kept_logs.clear()

    def _converge_committed(self, deployment: Deployment, observation: Observation) -> float:
        """Converge one deployment, then its alert rules, and commit; one failure spoils only its own."""
        in_run: list[KeptLogs] = []
        self._in_run = in_run
        try:
            wanted = DeploymentRun(self, deployment, observation).converge()
            alerts.evaluate_state(deployment, self.open_alerts)
            db.session.commit()
            in_run.clear()  # stored with the run
            return wanted
        except StaleDataError:
            db.session.rollback()
            self.open_alerts = alerts.open_alerts()
            return 0.0
        except EngineUnavailable:
            db.session.rollback()
            raise
        except Exception:
            log.exception("reconciling deployment %s failed", deployment.id)
            db.session.rollback()
            self.open_alerts = alerts.open_alerts()
            return self.settings.tick
        finally:
            self.kept_logs.extend(in_run)  # rolled back with the run: stored alone next
            self._in_run = None
