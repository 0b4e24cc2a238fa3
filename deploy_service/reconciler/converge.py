"""One reconcile pass: compare desired state (database) with observed state (one engine list call), act.

The pass is level-triggered and idempotent: it looks at everything each time and only acts where the
two differ, so running it twice, or after a crash of the service, changes nothing more. Per deployment:

- not meant to run (stopped, deleted, failed): remove its containers; record `stopped`.
- image not ready: pull or build it in the background (`prepare.py`), then carry on next pass.
- otherwise, per replica index: adopt the container that exists, start a missing one, notice one that
  exited (exit code, OOM) and restart it after an exponential backoff, fail the deployment when a
  replica spends its restart budget; replace replicas of an older generation one at a time (rolling
  restart); remove replicas past the desired count; run due HTTP health checks in parallel.
- then derive the status (deploying → running → ready, ready ↔ running) and apply the progress deadline,
  counted from the rollout's start or from the last pass the engine did not answer, whichever is later
  (an engine outage is not the deployment's fault: once the engine is back, it gets a full deadline).

Containers carrying our labels whose deployment is not live are orphans and are removed; containers
without our labels are never touched. Engine calls that can be slow run in parallel on a thread pool.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.exc import StaleDataError

from deploy_service.errors import EngineUnavailable, NotFound
from deploy_service.extensions import db
from deploy_service.models import DESIRED_RUNNING, Deployment, Instance
from deploy_service.models.types import utcnow
from deploy_service.reconciler.dispatch import Dispatcher
from deploy_service.reconciler.health import HealthChecker
from deploy_service.reconciler.ports import free_port
from deploy_service.reconciler.prepare import Preparer
from deploy_service.reconciler.sampling import Sampler
from deploy_service.reconciler.settings import ReconcileSettings, seconds_until
from deploy_service.reconciler.timing import restart_delay
from deploy_service.runner.base import (
    ExitInfo,
    ImageUnavailable,
    ReplicaInfo,
    ReplicaSpec,
    ReplicaStartFailed,
    Runner,
    RunnerError,
)
from deploy_service.services import alerts, lifecycle
from deploy_service.services.secrets import resolve_secret_values

log = logging.getLogger(__name__)


class Converger:
    """Runs passes. One instance lives as long as the reconciler (it keeps health-check schedules)."""

    def __init__(self, app: Flask, runner: Runner, settings: ReconcileSettings, *, wake: Callable[[], None]) -> None:
        self.app = app
        self.runner = runner
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="reconcile")
        self.preparer = Preparer(app, runner, wake=wake)
        self.health = HealthChecker(settings, self.pool)
        self.sampler = Sampler(runner, settings, self.pool)
        self._oom_at: dict[str, float] = {}
        self.dispatcher = Dispatcher(app)
        self._open_alerts: alerts.OpenAlerts = {}
        self.engine_failed_at: datetime | None = None
        """The last pass the engine did not answer: a rollout's deadline never counts the outage."""

    def close(self) -> None:
        self.preparer.close()
        self.dispatcher.close()
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- the pass ---------------------------------------------------------------------------------

    def run_pass(self) -> float:
        """Converge every live deployment once; returns seconds until the next pass is wanted.

        Each deployment is committed on its own, and objects are not expired by those commits: the pass
        read every deployment once at its start, and reloading each one after its neighbour's commit
        doubled the pass time at 200 replicas. A deployment changed meanwhile by the API still fails
        its optimistic `version` check (StaleDataError below) and is converged again next pass.

        Raises:
            EngineUnavailable: the engine did not answer the list call (nothing was changed).
        """
        db.session().expire_on_commit = False
        observed = self.runner.list_replicas()
        deployments = self._live_deployments()
        next_pass = self._converge_deployments(deployments, observed)
        self.health.forget_all_but(r.container_id for r in observed)
        return self._after_deployments(deployments, next_pass)

    def _live_deployments(self) -> list[Deployment]:
        return list(
            db.session.scalars(
                select(Deployment)
                .where(Deployment.status != lifecycle.KILLED)
                .options(selectinload(Deployment.instances))
                .order_by(Deployment.created_at)
            ).all()
        )

    def _converge_deployments(self, deployments: list[Deployment], observed: list[ReplicaInfo]) -> float:
        """Converge each deployment (one transaction each); returns seconds until the next pass is wanted."""
        by_deployment: dict[str, list[ReplicaInfo]] = defaultdict(list)
        for replica in observed:
            by_deployment[replica.deployment_id].append(replica)
        live = {deployment.id for deployment in deployments}
        orphans = [replica for replica in observed if replica.deployment_id not in live]
        if orphans:
            log.info("removing %d orphaned container(s)", len(orphans))
            self._remove_all(orphans)
        used_ports = {i.port for d in deployments for i in d.instances if i.port} | {r.port for r in observed if r.port}
        return self._each_deployment(
            deployments, lambda deployment: self._converge(deployment, by_deployment.get(deployment.id, []), used_ports)
        )

    def _each_deployment(self, deployments: list[Deployment], converge: Callable[[Deployment], float]) -> float:
        """Run `converge` per deployment, then the alert rules, and commit; one failure spoils only its own."""
        next_pass = self.settings.resync
        self._open_alerts = alerts.open_alerts()
        for deployment in deployments:
            try:
                wanted = converge(deployment)
                alerts.evaluate_state(deployment, self._open_alerts)
                db.session.commit()
            except StaleDataError:
                db.session.rollback()
                self._open_alerts = alerts.open_alerts()
                wanted = 0.0
            except EngineUnavailable:
                db.session.rollback()
                raise
            except Exception:
                log.exception("reconciling deployment %s failed", deployment.id)
                db.session.rollback()
                self._open_alerts = alerts.open_alerts()
                wanted = self.settings.tick
            next_pass = min(next_pass, wanted)
        return next_pass

    def _after_deployments(self, deployments: list[Deployment], next_pass: float) -> float:
        """Resource samples, their alert rules and webhook deliveries, after the deployments of a pass."""
        try:
            if self.sampler.maybe_sample(list(deployments)):
                window = self.app.config["ALERT_WINDOW_MINUTES"] * 60
                recent_oom = {d for d, at in self._oom_at.items() if time.monotonic() - at < window}
                for deployment in deployments:
                    alerts.evaluate_telemetry(deployment, self._open_alerts, oom_recently=deployment.id in recent_oom)
            db.session.commit()
        except EngineUnavailable:
            db.session.rollback()
            raise
        except Exception:
            log.exception("sampling container resources failed")
            db.session.rollback()
        next_pass = min(next_pass, max(self.sampler.seconds_until_due(), self.settings.tick))
        try:
            delivery_due = self.dispatcher.dispatch_due()
            if delivery_due is not None:
                next_pass = min(next_pass, max(delivery_due, self.settings.tick))
        except Exception:
            log.exception("dispatching webhook deliveries failed")
            db.session.rollback()
        return max(next_pass, 0.01)

    def _converge(self, deployment: Deployment, containers: list[ReplicaInfo], used_ports: set[int]) -> float:
        settings = self.settings
        if deployment.desired_state != DESIRED_RUNNING or deployment.status in (lifecycle.FAILED, lifecycle.STOPPED):
            self._wind_down(deployment, containers)
            return settings.resync
        if not deployment.image_ready and not self._image_already_there(deployment):
            self.preparer.ensure(deployment.id)
            return settings.tick
        now = utcnow()
        wanted = settings.resync
        desired = deployment.replicas_desired
        instances = {instance.index: instance for instance in deployment.instances}
        for index in range(desired):
            if index not in instances:
                # Counters set here, not left to the column defaults (applied only at the flush): the
                # alert rules read them in this very pass.
                instance = Instance(
                    deployment_id=deployment.id,
                    index=index,
                    generation=deployment.generation,
                    status="pending",
                    restarts=0,
                    recent_restarts=0,
                    health_failures=0,
                )
                deployment.instances.append(instance)
                instances[index] = instance

        current: dict[int, ReplicaInfo] = {}
        extra: list[ReplicaInfo] = []
        older: dict[int, ReplicaInfo] = {}
        for replica in containers:
            if replica.index >= desired:
                extra.append(replica)
            elif replica.generation == deployment.generation and replica.index not in current:
                current[replica.index] = replica
            elif replica.generation < deployment.generation and replica.index not in older:
                older[replica.index] = replica
            else:
                extra.append(replica)
        extra.extend(replica for index, replica in older.items() if index in current)
        older = {index: replica for index, replica in older.items() if index not in current}
        self._scale_down(deployment, instances, extra)

        starts: list[int] = []
        for index in range(desired):
            instance, found = instances[index], current.get(index)
            if found is None:
                if index in older:
                    continue
                if (
                    instance.container_id
                    and instance.generation == deployment.generation
                    and instance.status == "running"
                ):
                    instance.restarts += 1
                    lifecycle.record_event(
                        deployment,
                        "container_missing",
                        f"Replica {index}'s container disappeared; recreating it.",
                        {"replica": index, "container_id": instance.container_id},
                    )
                starts.append(index)
            elif found.state == "created":
                # Created but never started: the engine (or this service) went away between the two
                # calls. Starting the replica again adopts this container by its name and starts it.
                starts.append(index)
            elif found.exited:
                wanted = min(wanted, self._handle_exit(deployment, instance, found, now, starts))
                if deployment.status == lifecycle.FAILED:
                    return settings.resync
            else:
                self._observe_running(deployment, instance, found, now)

        if older and not starts and self._all_settled(deployment, instances, current):
            index = min(older)
            replaced = older.pop(index)
            self._remove_all([replaced])
            lifecycle.record_event(
                deployment,
                "replica_replaced",
                f"Rolling restart: replacing replica {index}.",
                {"replica": index, "old_container_id": replaced.container_id, "generation": deployment.generation},
            )
            starts.append(index)
        if starts:
            self._start(deployment, [instances[index] for index in starts], used_ports)
            if deployment.status == lifecycle.FAILED:
                return settings.resync
            wanted = settings.tick

        wanted = min(wanted, self.health.check(deployment, instances, now))
        self._derive_status(deployment, instances, now, rolling=bool(older))
        started = self._deadline_start(deployment)
        if started is not None:
            deadline = started + timedelta(seconds=settings.progress_deadline)
            wanted = min(wanted, max(seconds_until(deadline, now), settings.tick))
        return wanted

    # -- pieces -----------------------------------------------------------------------------------

    def _image_already_there(self, deployment: Deployment) -> bool:
        """For an image reference the engine already has, mark it ready in this pass (no background job)."""
        if deployment.config.get("source") or not deployment.image:
            return False
        info = self.runner.local_image(deployment.image)
        if info is None:
            return False
        deployment.image_ready = True
        lifecycle.record_event(
            deployment,
            "image_ready",
            f"Image {info.ref} is ready ({info.source}).",
            {"image": info.ref, "source": info.source},
        )
        return True

    def _wind_down(self, deployment: Deployment, containers: list[ReplicaInfo]) -> None:
        if containers:
            self._remove_all(containers)
            lifecycle.record_event(
                deployment,
                "containers_removed",
                f"Removed {len(containers)} container(s).",
                {"container_ids": [replica.container_id for replica in containers]},
            )
        self._mark_wound_down(deployment, "containers removed")

    def _mark_wound_down(self, deployment: Deployment, what: str) -> None:
        """Once its replicas are gone: every instance `stopped`, and a stop on request recorded."""
        for instance in deployment.instances:
            if instance.container_id or instance.status not in ("stopped", "exited"):
                instance.container_id = None
                instance.status = "stopped"
                instance.healthy = None
                instance.next_restart_at = None
        if deployment.desired_state != DESIRED_RUNNING and deployment.status != lifecycle.STOPPED:
            lifecycle.transition(deployment, lifecycle.STOPPED, f"Stopped on request; {what}.")

    def _scale_down(self, deployment: Deployment, instances: dict[int, Instance], extra: list[ReplicaInfo]) -> None:
        if extra:
            self._remove_all(extra)
            for replica in extra:
                if replica.index >= deployment.replicas_desired:
                    lifecycle.record_event(
                        deployment,
                        "replica_removed",
                        f"Replica {replica.index} removed.",
                        {"replica": replica.index, "container_id": replica.container_id},
                    )
        for index in [index for index in instances if index >= deployment.replicas_desired]:
            deployment.instances.remove(instances.pop(index))

    def _handle_exit(
        self, deployment: Deployment, instance: Instance, replica: ReplicaInfo, now: datetime, starts: list[int]
    ) -> float:
        settings = self.settings
        if instance.next_restart_at is None or instance.container_id != replica.container_id:
            try:
                info = self.runner.exit_info(replica.container_id)
            except EngineUnavailable:
                raise
            except RunnerError as exc:  # removed between the list and the inspect
                info = ExitInfo(exit_code=replica.exit_code, oom_killed=False, error=exc.message)
            instance.container_id = replica.container_id
            if self._note_exit(deployment, instance, info, {"container_id": replica.container_id}):
                self._wind_down(deployment, list(self._deployment_containers(deployment)))
                return settings.resync
            delay = restart_delay(instance.recent_restarts, base=settings.backoff_base, maximum=settings.backoff_max)
            instance.next_restart_at = now + timedelta(seconds=delay)
            lifecycle.record_event(
                deployment,
                "restart_backoff",
                f"Replica {instance.index} restarts in {delay:g}s (attempt {instance.recent_restarts}).",
                {"replica": instance.index, "delay_seconds": delay, "attempt": instance.recent_restarts},
            )
            return max(delay, 0.01)
        if now >= instance.next_restart_at:
            self._remove_all([replica])
            instance.next_restart_at = None
            starts.append(instance.index)
            return settings.tick
        return max(seconds_until(instance.next_restart_at, now), 0.01)

    def _note_exit(self, deployment: Deployment, instance: Instance, info: ExitInfo, data: dict[str, Any]) -> bool:
        """Count an exit of `instance` (status, restart counters, an OOM's `memory_high`, a `container_exited`
        event with `data`); True when that spent the restart budget and the deployment is now `failed`
        (the caller winds it down). Shared by both runners' convergers: who restarts differs, the count not.
        """
        settings = self.settings
        instance.status = "exited"
        instance.healthy = False
        instance.exit_code = info.exit_code
        instance.restarts += 1
        instance.recent_restarts += 1
        reason = " (killed: out of memory)" if info.oom_killed else ""
        if info.oom_killed:
            self._oom_at[deployment.id] = time.monotonic()
            finding = alerts.memory_rule(deployment, oom_recently=True)
            alerts.observe(deployment, "memory_high", finding, known=self._open_alerts)
        lifecycle.record_event(
            deployment,
            "container_exited",
            f"Replica {instance.index} exited with code {info.exit_code}{reason}.",
            {
                "replica": instance.index,
                **data,
                "exit_code": info.exit_code,
                "oom_killed": info.oom_killed,
                "error": info.error,
            },
        )
        if instance.recent_restarts <= settings.restart_budget:
            return False
        lifecycle.transition(
            deployment,
            lifecycle.FAILED,
            f"Replica {instance.index} kept crashing ({instance.recent_restarts - 1} restarts).",
            error=f"Replica {instance.index} kept crashing: last exit code {info.exit_code}{reason}; "
            f"restart budget of {settings.restart_budget} spent.",
        )
        return True

    def _deployment_containers(self, deployment: Deployment) -> Iterable[ReplicaInfo]:
        return [replica for replica in self.runner.list_replicas() if replica.deployment_id == deployment.id]

    def _observe_running(self, deployment: Deployment, instance: Instance, replica: ReplicaInfo, now: datetime) -> None:
        if instance.container_id != replica.container_id:
            instance.container_id = replica.container_id
            instance.started_at = instance.started_at or replica.created_at or now
            instance.healthy = None
            instance.health_failures = 0
            lifecycle.record_event(
                deployment,
                "container_adopted",
                f"Replica {instance.index}'s running container was adopted.",
                {"replica": instance.index, "container_id": replica.container_id},
            )
        self._mark_running(instance, generation=replica.generation, host=replica.host, port=replica.port, now=now)

    def _mark_running(self, instance: Instance, *, generation: int, host: str, port: int | None, now: datetime) -> None:
        """Record a replica seen running; its restart count for backoff resets once it has stayed up the stable
        period. Shared by both runners' convergers."""
        instance.status = "running"
        instance.generation = generation
        instance.host = host
        instance.port = port or instance.port
        instance.next_restart_at = None
        if (
            instance.recent_restarts
            and instance.started_at is not None
            and (now - instance.started_at).total_seconds() >= self.settings.stable_seconds
        ):
            instance.recent_restarts = 0

    def _all_settled(
        self, deployment: Deployment, instances: dict[int, Instance], current: dict[int, ReplicaInfo]
    ) -> bool:
        """Every replica of the current generation that exists is running and healthy (rolling restart gate)."""
        for index, replica in current.items():
            instance = instances[index]
            if not replica.running or not instance.healthy:
                return False
        return True

    def _start(self, deployment: Deployment, targets: list[Instance], used_ports: set[int]) -> None:
        config = deployment.config
        try:
            secret_env = resolve_secret_values(deployment.owner_id, config.get("secrets") or {})
        except NotFound as exc:
            lifecycle.transition(deployment, lifecycle.FAILED, exc.message, error=f"{exc.message} {exc.details}")
            return
        network = self.runner.network_mode()
        env = {**(config.get("env") or {}), **secret_env}
        resources = config.get("resources") or {}
        specs = []
        for instance in targets:
            port = free_port(used_ports, self.settings.port_range) if network == "host" else int(config["port"])
            specs.append(
                ReplicaSpec(
                    deployment_id=deployment.id,
                    agent_id=deployment.agent_id,
                    index=instance.index,
                    generation=deployment.generation,
                    image=deployment.image or config["image"],
                    port=port,
                    env=env,
                    command=config.get("command"),
                    cpu=float(resources.get("cpu", 0.5)),
                    memory_mb=int(resources.get("memory_mb", 512)),
                    read_only_rootfs=bool(config.get("read_only_rootfs", True)),
                    network_mode=network,
                )
            )
        results = list(self.pool.map(self._start_one, specs))
        now = utcnow()
        for instance, spec, result in zip(targets, specs, results, strict=True):
            if isinstance(result, EngineUnavailable):
                raise result
            if isinstance(result, ImageUnavailable):
                deployment.image_ready = False
                lifecycle.record_event(deployment, "image_missing", f"{result.message} Preparing it again.")
                return
            if isinstance(result, ReplicaStartFailed | Exception):
                lifecycle.transition(
                    deployment,
                    lifecycle.FAILED,
                    f"Replica {instance.index} could not start.",
                    error=f"Replica {instance.index} could not start: {result}",
                )
                return
            restarted = instance.container_id is not None
            instance.container_id = result.container_id
            instance.generation = spec.generation
            instance.status = "running" if result.running else result.state
            instance.host = result.host or self.settings.replica_host
            instance.port = result.port or spec.port
            instance.started_at = now
            instance.exit_code = None
            instance.healthy = None
            instance.health_failures = 0
            lifecycle.record_event(
                deployment,
                "container_restarted" if restarted else "container_started",
                f"Replica {instance.index} {'restarted' if restarted else 'started'} on port {instance.port}.",
                {"replica": instance.index, "container_id": result.container_id, "port": instance.port},
            )

    def _start_one(self, spec: ReplicaSpec) -> ReplicaInfo | Exception:
        try:
            return self.runner.start_replica(spec)
        except Exception as exc:  # noqa: BLE001 - sorted out by the caller, per replica
            return exc

    def _derive_status(
        self, deployment: Deployment, instances: dict[int, Instance], now: datetime, *, rolling: bool
    ) -> None:
        wanted = [instances[index] for index in range(deployment.replicas_desired)]
        all_running = all(i.status == "running" and i.container_id for i in wanted)
        all_ready = all_running and all(i.healthy for i in wanted) and not rolling
        status = deployment.status
        if all_ready:
            if status != lifecycle.READY:
                if status == lifecycle.DEPLOYING:
                    lifecycle.transition(deployment, lifecycle.RUNNING, "Every replica is running.")
                lifecycle.transition(deployment, lifecycle.READY, "Every replica is ready.")
            elif deployment.progress_started_at is not None:
                deployment.progress_started_at = None
                lifecycle.record_event(deployment, "rollout_complete", "Every replica is ready.")
            return
        if all_running and status == lifecycle.DEPLOYING:
            lifecycle.transition(deployment, lifecycle.RUNNING, "Every replica is running.")
        elif status == lifecycle.READY:
            reason = "A rolling restart is replacing replicas." if rolling else "Not every replica is ready."
            lifecycle.transition(deployment, lifecycle.RUNNING, reason)
        started = self._deadline_start(deployment)
        if started is not None and (now - started).total_seconds() > self.settings.progress_deadline:
            seconds = f"{self.settings.progress_deadline:g}"
            lifecycle.transition(
                deployment,
                lifecycle.FAILED,
                f"Not ready within the progress deadline of {seconds}s.",
                error=f"The deployment did not become ready within {seconds}s.",
            )
            self._wind_down(deployment, list(self._deployment_containers(deployment)))

    def _deadline_start(self, deployment: Deployment) -> datetime | None:
        """When the progress deadline of the rollout started counting: never before the engine was back."""
        started = deployment.progress_started_at
        if started is None or self.engine_failed_at is None:
            return started
        return max(started, self.engine_failed_at)

    def _remove_all(self, replicas: list[ReplicaInfo]) -> None:
        timeout = self.settings.stop_timeout
        errors = [
            error
            for error in self.pool.map(lambda r: self._remove_one(r.container_id, timeout), replicas)
            if error is not None
        ]
        for error in errors:
            if isinstance(error, EngineUnavailable):
                raise error
            log.warning("could not remove a container: %s", error)

    def _remove_one(self, container_id: str, timeout: float) -> Exception | None:
        try:
            self.runner.remove_replica(container_id, stop_timeout=timeout)
        except Exception as exc:  # noqa: BLE001
            return exc
        return None
