"""One reconcile pass for a runner whose engine keeps replicas alive (Docker Swarm): converge services.

Swarm starts, restarts (its restart policy: after the backoff base, at most the restart budget within
the stable window) and rolls replicas; the reconciler does not start or stop them one by one, it never
fights Swarm. Per pass it reads every service with its tasks (a few engine calls), then per deployment:

- not meant to run (stopped, deleted, failed): remove the service; record `stopped`.
- image not ready: as with containers (`prepare.py`).
- the service is missing, or wants another replica count or generation than the database: apply the
  spec once (create, scale, or a start-first rolling update with rollback on failure; a new generation
  gets a new port block so old and new tasks of a replica never share a port).
- observe the tasks: each replica's current task gives the instance (container, host, port, status);
  every task that ended on its own is recorded once (`container_exited`, restarts counted, exit code and
  OOM from the container where it is local), and a replica past the restart budget fails the deployment.
- the same HTTP health checks, alerts and status rules (running, ready, progress deadline) as
  `converge.py`, whose `Converger` this extends.

Services labelled with our namespace whose deployment is not live are orphans and are removed.
Swarm's own history limit (`TaskHistoryRetentionLimit`, 5 by default) bounds what can be seen of past
tasks; exits are recorded as they are observed, so a short pass interval sees them all.
"""

from __future__ import annotations

import logging
import random
import socket
from datetime import datetime, timedelta
from typing import Any

from deploy_service.errors import NotFound
from deploy_service.models import DESIRED_RUNNING, Deployment, Instance
from deploy_service.models.types import utcnow
from deploy_service.reconciler.converge import Converger
from deploy_service.reconciler.settings import seconds_until
from deploy_service.runner.base import (
    EngineUnavailable,
    ExitInfo,
    ImageUnavailable,
    ReplicaInfo,
    ReplicaStartFailed,
    RunnerError,
    ServiceInfo,
    ServiceSpec,
    TaskInfo,
)
from deploy_service.runner.swarm_records import MAX_REPLICAS
from deploy_service.runner.swarm_runner import current_tasks
from deploy_service.services import lifecycle
from deploy_service.services.secrets import resolve_secret_values

log = logging.getLogger(__name__)


def free_block(used: set[int], port_range: tuple[int, int], replicas: int) -> int:
    """A block of 100 host ports inside `port_range`, unused, whose first `replicas` ports bind now.

    Raises:
        RuntimeError: none left.
    """
    low, high = port_range
    blocks = [block for block in range((low + 99) // 100, high // 100 + 1) if block * 100 + 99 <= high]
    if blocks:
        start = random.randrange(len(blocks))
        blocks = blocks[start:] + blocks[:start]
    for block in blocks:
        if block in used or not _bindable(block * 100 + 1, replicas):
            continue
        used.add(block)
        return block
    raise RuntimeError(f"no free block of 100 ports left in HOST_PORT_RANGE {low}-{high}")


def _bindable(first: int, count: int) -> bool:
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


class SwarmConverger(Converger):
    """Converges deployments as engine-managed services."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._services: dict[str, ServiceInfo] = {}
        self._seen_exits: set[str] = set()
        # Tasks whose end was recorded (or seen when adopting a service this process did not create),
        # and deployments whose service this process has created or observed.
        self._known: set[str] = set()

    def run_pass(self) -> float:
        services = self.runner.list_services()
        deployments = self._live_deployments()
        self._services = {service.deployment_id: service for service in services}
        live = {deployment.id for deployment in deployments}
        orphans = [service.deployment_id for service in services if service.deployment_id not in live]
        if orphans:
            log.info("removing %d orphaned service(s)", len(orphans))
            timeout = self.settings.stop_timeout
            list(self.pool.map(lambda d: self.runner.remove_service(d, stop_timeout=timeout), orphans))
        used_blocks: set[int] = set()
        for service in services:
            used_blocks |= service.port_blocks
        next_pass = self._each_deployment(deployments, lambda d: self._converge_service(d, used_blocks))
        self.health.forget_all_but(
            task.container_id for s in services for task in current_tasks(s).values() if task.container_id
        )
        # Swarm prunes old tasks (and we remove services): forget what can never be listed again.
        self._seen_exits &= {task.task_id for service in services for task in service.tasks}
        self._known &= live
        return self._after_deployments(deployments, next_pass)

    def _converge_service(self, deployment: Deployment, used_blocks: set[int]) -> float:
        settings = self.settings
        service = self._services.get(deployment.id)
        if deployment.desired_state != DESIRED_RUNNING or deployment.status in (lifecycle.FAILED, lifecycle.STOPPED):
            self._wind_down(deployment, [])
            return settings.resync
        if not deployment.image_ready and not self._image_already_there(deployment):
            self.preparer.ensure(deployment.id)
            return settings.tick
        desired = deployment.replicas_desired
        if desired > MAX_REPLICAS:
            lifecycle.transition(
                deployment,
                lifecycle.FAILED,
                f"The swarm runner runs at most {MAX_REPLICAS} replicas per deployment.",
                error=f"{desired} replicas wanted; the swarm runner runs at most {MAX_REPLICAS} per deployment.",
            )
            self._wind_down(deployment, [])
            return settings.resync
        now = utcnow()
        instances = {instance.index: instance for instance in deployment.instances}
        for index in range(desired):
            if index not in instances:
                instance = Instance(
                    deployment_id=deployment.id,
                    index=index,
                    generation=deployment.generation,
                    restarts=0,
                    recent_restarts=0,
                    health_failures=0,
                )
                deployment.instances.append(instance)
                instances[index] = instance
        for index in [index for index in instances if index >= desired]:
            lifecycle.record_event(
                deployment,
                "replica_removed",
                f"Replica {index} removed.",
                {"replica": index, "container_id": instances[index].container_id},
            )
            deployment.instances.remove(instances.pop(index))

        if service is None or service.generation != deployment.generation or service.replicas != desired:
            if service is not None and service.update_state.startswith("rollback"):
                return self._rolled_back(deployment, service)
            if not self._apply(deployment, service, used_blocks):
                return settings.resync if deployment.status == lifecycle.FAILED else settings.tick
            if service is None:
                return settings.tick
        wanted = self._observe(deployment, service, instances, now)
        if deployment.status == lifecycle.FAILED:
            return settings.resync
        wanted = min(wanted, self.health.check(deployment, instances, now))
        rolling = service.update_state == "updating" or service.generation != deployment.generation
        self._derive_status(deployment, instances, now, rolling=rolling)
        if deployment.progress_started_at is not None:
            deadline = deployment.progress_started_at + timedelta(seconds=settings.progress_deadline)
            wanted = min(wanted, max(seconds_until(deadline, now), settings.tick))
        return wanted

    # -- applying the spec ----------------------------------------------------------------------------

    def _apply(self, deployment: Deployment, service: ServiceInfo | None, used_blocks: set[int]) -> bool:
        """Create or update the service to what the database wants; False when that did not happen."""
        config = deployment.config
        try:
            secret_env = resolve_secret_values(deployment.owner_id, config.get("secrets") or {})
        except NotFound as exc:
            lifecycle.transition(deployment, lifecycle.FAILED, exc.message, error=f"{exc.message} {exc.details}")
            return False
        desired = deployment.replicas_desired
        same_generation = service is not None and service.generation == deployment.generation
        if same_generation and service is not None and service.port_block is not None:
            block = service.port_block
        else:
            block = free_block(used_blocks, self.settings.port_range, desired)
        resources = config.get("resources") or {}
        settings = self.settings
        spec = ServiceSpec(
            deployment_id=deployment.id,
            agent_id=deployment.agent_id,
            generation=deployment.generation,
            image=deployment.image or config["image"],
            replicas=desired,
            port_block=block,
            env={**(config.get("env") or {}), **secret_env},
            command=config.get("command"),
            cpu=float(resources.get("cpu", 0.5)),
            memory_mb=int(resources.get("memory_mb", 512)),
            read_only_rootfs=bool(config.get("read_only_rootfs", True)),
            restart_delay=settings.backoff_base,
            restart_attempts=settings.restart_budget,
            restart_window=settings.stable_seconds,
            stop_timeout=settings.stop_timeout,
            update_monitor=settings.startup_grace,
            built=bool(config.get("source")),
        )
        try:
            self.runner.apply_service(spec)
        except ImageUnavailable as exc:
            deployment.image_ready = False
            lifecycle.record_event(deployment, "image_missing", f"{exc.message} Preparing it again.")
            return False
        except ReplicaStartFailed as exc:
            lifecycle.transition(
                deployment, lifecycle.FAILED, "The service could not be applied.", error=f"{exc.message}"
            )
            return False
        self._known.add(deployment.id)
        data = {"generation": deployment.generation, "replicas": desired, "port_block": block}
        if service is None:
            lifecycle.record_event(
                deployment, "service_created", f"Swarm service created with {desired} replica(s).", data
            )
        elif not same_generation:
            lifecycle.record_event(
                deployment,
                "rolling_update",
                f"Rolling update to generation {deployment.generation} (start-first, rollback on failure).",
                data,
            )
        else:
            lifecycle.record_event(
                deployment,
                "service_scaled",
                f"Swarm service scaled from {service.replicas} to {desired} replica(s).",
                {**data, "from": service.replicas},
            )
        return True

    def _rolled_back(self, deployment: Deployment, service: ServiceInfo) -> float:
        lifecycle.transition(
            deployment,
            lifecycle.FAILED,
            f"The rolling update to generation {deployment.generation} failed and Swarm rolled it back.",
            error=f"Rolling update failed: {service.update_message or service.update_state}",
        )
        self._wind_down(deployment, [])
        return self.settings.resync

    # -- observing tasks --------------------------------------------------------------------------------

    def _observe(
        self, deployment: Deployment, service: ServiceInfo, instances: dict[int, Instance], now: datetime
    ) -> float:
        settings = self.settings
        adopting = deployment.id not in self._known
        self._known.add(deployment.id)
        wanted = settings.resync
        for task in service.tasks:
            if not task.failed or task.task_id in self._seen_exits or task.index not in instances:
                continue
            self._seen_exits.add(task.task_id)
            if adopting or task.generation != deployment.generation:
                continue
            self._record_exit(deployment, instances[task.index], task)
            if deployment.status == lifecycle.FAILED:
                return settings.resync
            wanted = settings.tick
        current = current_tasks(service)
        for index, instance in instances.items():
            now_task = current.get(index)
            if now_task is None:
                continue
            if now_task.running:
                self._observe_running_task(deployment, instance, now_task, now)
            elif now_task.ended:
                instance.status = "exited"
                instance.healthy = False
            else:
                instance.status = "pending"
                wanted = settings.tick
        return wanted

    def _record_exit(self, deployment: Deployment, instance: Instance, task: TaskInfo) -> None:
        settings = self.settings
        info = ExitInfo(exit_code=task.exit_code, oom_killed=False, error=task.error)
        if task.container_id:
            try:
                local = self.runner.exit_info(task.container_id)
                info = ExitInfo(
                    exit_code=task.exit_code if task.exit_code is not None else local.exit_code,
                    oom_killed=local.oom_killed,
                    error=task.error or local.error,
                )
            except EngineUnavailable:
                raise
            except RunnerError:
                pass  # on another node, or already pruned: the task's own status is what we know
        spent = self._note_exit(
            deployment,
            instance,
            info,
            {"container_id": task.container_id, "task_id": task.task_id, "task_state": task.task_state},
        )
        if spent:
            self._wind_down(deployment, [])
            return
        lifecycle.record_event(
            deployment,
            "restart_backoff",
            f"Swarm restarts replica {instance.index} in {settings.backoff_base:g}s "
            f"(attempt {instance.recent_restarts}).",
            {"replica": instance.index, "delay_seconds": settings.backoff_base, "attempt": instance.recent_restarts},
        )

    def _observe_running_task(self, deployment: Deployment, instance: Instance, task: TaskInfo, now: datetime) -> None:
        if instance.container_id != task.container_id:
            data = {"replica": instance.index, "container_id": task.container_id, "port": task.port}
            if instance.container_id is None:
                kind, text = "container_started", "started"
            elif task.generation > instance.generation:
                kind, text = "replica_replaced", "replaced by the rolling update"
                data["generation"] = task.generation
            else:
                kind, text = "container_restarted", "restarted by Swarm"
            lifecycle.record_event(deployment, kind, f"Replica {instance.index} {text} on port {task.port}.", data)
            instance.container_id = task.container_id
            instance.started_at = now  # our clock: the stable period is measured like the docker runner's
            instance.healthy = None
            instance.health_failures = 0
            instance.exit_code = None
        self._mark_running(instance, generation=task.generation, host=task.host, port=task.port, now=now)

    # -- winding down ---------------------------------------------------------------------------------

    def _wind_down(self, deployment: Deployment, containers: list[ReplicaInfo]) -> None:
        if self._services.pop(deployment.id, None) is not None:
            self.runner.remove_service(deployment.id, stop_timeout=self.settings.stop_timeout)
            lifecycle.record_event(deployment, "service_removed", "Swarm service removed with its containers.")
        self._mark_wound_down(deployment, "service removed")
