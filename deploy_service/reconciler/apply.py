"""Carrying one deployment's plan out: the executor's per-deployment step.

`DeploymentRun.converge` plans (`plan.plan_replicas`), carries the actions out (the database here:
slots, counters, events, transitions; the engine through the executor's driver), runs the due health
checks, then plans and carries out the status (`plan.plan_status`). Each action is one small handler;
removals run as one parallel batch, and starts as another: after the removals that free the slots
they take, alongside the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from deploy_service.errors import EngineUnavailable, NotFound
from deploy_service.extensions import db
from deploy_service.models import (
    Agent,
    AgentKind,
    AlertKind,
    Deployment,
    DeploymentStatus,
    DesiredState,
    Instance,
    InstanceStatus,
    RestartPolicy,
)
from deploy_service.models.types import utcnow
from deploy_service.reconciler import plan as p
from deploy_service.reconciler.drivers import Driver, Observation, Workload
from deploy_service.reconciler.health import HealthChecker
from deploy_service.reconciler.prepare import Preparer
from deploy_service.reconciler.sampling import RecentOom
from deploy_service.reconciler.settings import ReconcileSettings
from deploy_service.runner.base import ImageUnavailable, RegistryCredentials, ReplicaInfo, ReplicaStartFailed
from deploy_service.services import alerts, lifecycle
from deploy_service.services.secrets import registry_credentials, resolve_secret_values

T = TypeVar("T")
_OUTCOMES = frozenset({InstanceStatus.SUCCEEDED, InstanceStatus.FAILED})


def _event_data(action: p.Transition) -> dict[str, object]:
    return {"error": action.error} if action.error else {}


class _Background(Generic[T]):
    """One call on a thread of its own; `result()` waits for it and returns or raises what it did."""

    def __init__(self, call: Callable[..., T], *args: object) -> None:
        self._call, self._args = call, args
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="reconcile-start", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call(*self._args)
        except BaseException as exc:  # noqa: BLE001 - raised again by result(), on the caller's thread
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class PassParts(Protocol):
    """What a deployment's run uses of the pass that runs it (`executor.Executor`)."""

    settings: ReconcileSettings
    rules: p.Rules
    driver: Driver
    preparer: Preparer
    health: HealthChecker
    oom: RecentOom
    open_alerts: alerts.OpenAlerts
    engine_failed_at: datetime | None


def desired_of(deployment: Deployment) -> p.Desired:
    """The planner's view of a deployment row and its instance rows."""
    config = deployment.config or {}
    return p.Desired(
        deployment_id=deployment.id,
        status=deployment.status,
        wants_running=deployment.desired_state == DesiredState.RUNNING,
        generation=deployment.generation,
        replicas=deployment.replicas_desired,
        image_ready=bool(deployment.image_ready),
        image_error=deployment.image_error,
        progress_started_at=deployment.progress_started_at,
        kind=config.get("kind", AgentKind.SERVICE),
        restart_policy=config.get("restart_policy", RestartPolicy.ALWAYS),
        timeout_seconds=config.get("timeout_seconds"),
        slots=tuple(
            p.Slot(
                index=i.index,
                generation=i.generation,
                status=i.status,
                container_id=i.container_id,
                healthy=i.healthy,
                recent_restarts=i.recent_restarts or 0,
                next_restart_at=i.next_restart_at,
                started_at=i.started_at,
            )
            for i in deployment.instances
        ),
    )


class DeploymentRun:
    """One deployment's share of a pass: its plan carried out, action by action."""

    def __init__(self, executor: PassParts, deployment: Deployment, observation: Observation) -> None:
        self.x = executor
        self.deployment = deployment
        self.observation = observation
        self.observed = observation.of(deployment.id)
        self.now = utcnow()
        self.instances = {instance.index: instance for instance in deployment.instances}
        self._started: list[ReplicaInfo] = []
        self._removed: set[str] = set()

    def converge(self) -> float:
        x, deployment = self.x, self.deployment
        plan = p.plan_replicas(desired_of(deployment), self.observed, x.rules, self.now)
        if plan.of(p.PrepareImage) and self._image_already_there():
            plan = p.plan_replicas(desired_of(deployment), self.observed, x.rules, self.now)
        replaced: list[p.RemoveReplica] = []
        if not self._carry_out(plan, replaced=replaced):
            self._remove(replaced)
            return x.settings.resync if deployment.status == DeploymentStatus.FAILED else x.settings.tick
        if plan.settled:
            self._remove(replaced)
            return plan.wake_in
        wanted = plan.wake_in
        if not lifecycle.is_job(deployment):  # a job is not health-checked
            unready = [i for i in self.instances.values() if not i.healthy] if plan.rolling else []
            wanted = min(wanted, x.health.check(deployment, self.instances, self.now))
            if any(instance.healthy for instance in unready):
                # A replica of the rollout just became ready: its old one goes, the next one starts, at once
                # (not at the next health check that happens to be due, up to an interval later).
                wanted = min(wanted, 0.01)
        status = p.plan_status(
            desired_of(deployment),
            x.rules,
            self.now,
            rolling=plan.rolling,
            engine_back_at=x.engine_failed_at,
            fallback=plan.fallback,
        )
        if status.of(p.WindDown) or status.of(p.RollBack):
            self._remove(replaced)  # before what removes or restores replicas, so each is removed once
            replaced = []
        self._carry_out(status)
        self._remove(replaced)
        return min(wanted, status.wake_in)

    def _carry_out(self, plan: p.Plan, *, replaced: list[p.RemoveReplica] | None = None) -> bool:
        """Carry out `plan`'s actions; False when one could not be and the rest were dropped.

        Removals run first, except while replicas start: then only those of a replica a start takes
        (the restart of a crashed replica, whose container name the new one reuses) go first, and the
        others (an old replica whose replacement is ready, one past the count, a duplicate), which
        protect nothing, run while the starts do: a rolling update's next replica starts while the old
        one it follows is stopped, its lines stored and removed (`_start`). With no start, the old
        replicas whose replacements are ready are put in `replaced` (when given) for the caller to remove
        after the status step: the last one's removal does not hold back the release's activation, which
        is when every replica of it is ready (it serves alone from then: the old replica's slot already
        names its replacement).
        """
        starts = [action for action in plan.actions if isinstance(action, p.StartReplica)]
        taken = {action.index for action in starts} if starts else None
        first: list[p.RemoveReplica] = []
        later: list[p.RemoveReplica] = []
        for action in plan.actions:
            if isinstance(action, p.RemoveReplica):
                if taken is not None and action.replica.index not in taken:
                    later.append(action)
                elif taken is None and replaced is not None and action.reason == "replaced":
                    replaced.append(action)
                else:
                    first.append(action)
        if first:
            self._remove(first)
        for action in plan.actions:
            if not isinstance(action, p.StartReplica | p.RemoveReplica) and not self._do(action):
                if later:
                    self._remove(later)
                return False
        if not starts:
            return True
        return self._start(starts, while_removing=later)

    def _do(self, action: p.Action) -> bool:
        deployment = self.deployment
        if isinstance(action, p.WindDown):
            self._wind_down()
        elif isinstance(action, p.PrepareImage):
            built = bool((deployment.config or {}).get("source"))
            waits = self.x.preparer.ensure(deployment.id, build_owner=deployment.owner_id if built else None)
            if waits is not None:
                lifecycle.record_event(deployment, "build_queued", waits)
        elif isinstance(action, p.AddSlot):
            # Counters set here, not left to the column defaults (applied only at the flush): the alert
            # rules read them in this very pass.
            instance = Instance(
                deployment_id=deployment.id,
                index=action.index,
                generation=deployment.generation,
                status=InstanceStatus.PENDING,
                restarts=0,
                recent_restarts=0,
                health_failures=0,
            )
            deployment.instances.append(instance)
            self.instances[action.index] = instance
        elif isinstance(action, p.DropSlot):
            if action.event:
                lifecycle.record_event(
                    deployment,
                    "replica_removed",
                    f"Replica {action.index} removed.",
                    {"replica": action.index, "container_id": action.container_id},
                )
            deployment.instances.remove(self.instances.pop(action.index))
        elif isinstance(action, p.NoteExit):
            self._note_exit(action)
        elif isinstance(action, p.ReplicaSucceeded):
            self._succeeded(action)
        elif isinstance(action, p.ObserveRunning):
            self._observe_running(action)
        elif isinstance(action, p.MarkSlot):
            instance = self.instances[action.index]
            instance.status = action.status
            if action.status == InstanceStatus.EXITED:
                instance.healthy = False
        elif isinstance(action, p.ApplySpec):
            return self._apply(action)
        elif isinstance(action, p.Transition):
            if action.event is not None:
                lifecycle.record_event(deployment, action.event, action.reason, _event_data(action))
            lifecycle.transition(deployment, action.status, action.reason, error=action.error)
        elif isinstance(action, p.RollBack):
            self._roll_back(action)
        elif isinstance(action, p.RolloutComplete):
            deployment.progress_started_at = None
            lifecycle.record_event(deployment, "rollout_complete", "Every replica is ready.")
            lifecycle.activate_pending(deployment)
        return True

    # -- images -----------------------------------------------------------------------------------

    def _image_already_there(self) -> bool:
        """For an image reference the engine already has, mark it ready in this pass (no background job)."""
        deployment = self.deployment
        if deployment.config.get("source") or not deployment.image:
            return False
        info = self.x.driver.runner.local_image(deployment.image)
        if info is None:
            return False
        release = lifecycle.current_release(deployment)
        if release is not None and release.image_id not in (None, info.id):
            return False  # its tag moved: the preparer decides what the release runs
        lifecycle.pin_image(deployment, info.id, built=False, pinned_present=True)
        deployment.image_ready = True
        lifecycle.record_event(
            deployment,
            "image_ready",
            f"Image {info.ref} is ready ({info.source}).",
            {"image": info.ref, "source": info.source},
        )
        return True

    def _workload(self) -> Workload | None:
        """What the current generation runs, its secrets resolved; None (and `failed`) when one is missing."""
        deployment, config = self.deployment, self.deployment.config
        try:
            secret_env = resolve_secret_values(deployment.owner_id, config.get("secrets") or {})
        except NotFound as exc:
            lifecycle.transition(deployment, DeploymentStatus.FAILED, exc.message, error=f"{exc.message} {exc.details}")
            return None
        resources = config.get("resources") or {}
        release = lifecycle.current_release(deployment)
        pinned = release.image_id if release is not None and not self.x.driver.engine_keeps_replicas else None
        return Workload(
            deployment_id=deployment.id,
            agent_id=deployment.agent_id,
            generation=deployment.generation,
            image=pinned or deployment.image or config["image"],
            port=int(config.get("port", 0)),
            env={**(config.get("env") or {}), **secret_env},
            command=config.get("command"),
            cpu=float(resources.get("cpu", 0.5)),
            memory_mb=int(resources.get("memory_mb", 512)),
            read_only_rootfs=bool(config.get("read_only_rootfs", True)),
            run_as_user=config.get("run_as_user"),
            built=bool(config.get("source")),
            registry_auth=self._node_credentials(),
            kind=config.get("kind", AgentKind.SERVICE),
            restart_policy=config.get("restart_policy", RestartPolicy.ALWAYS),
            judged_after=_judged_after(config.get("health_check")),
        )

    def _node_credentials(self) -> RegistryCredentials | None:
        """The agent's registry login when the engine pulls its image on each node itself (Swarm), else None.

        A built image's registry is the service's own (`SWARM_REGISTRY`), never the agent's. A password secret
        gone meanwhile means no credentials: the nodes' pull then fails in the engine's words.
        """
        deployment = self.deployment
        if not self.x.driver.engine_keeps_replicas or deployment.config.get("source"):
            return None
        agent = db.session.get(Agent, deployment.agent_id)
        try:
            return registry_credentials(
                deployment.owner_id, agent.registry_auth if agent else None, image=deployment.config.get("image")
            )
        except NotFound:
            return None

    # -- containers -------------------------------------------------------------------------------

    def _remove(self, actions: list[p.RemoveReplica]) -> None:
        if not actions:
            return
        deployment = self.deployment
        self.x.driver.remove([action.replica for action in actions])
        for action in actions:
            replica = action.replica
            self._removed.add(replica.container_id)
            if action.reason == "scaled_down":
                lifecycle.record_event(
                    deployment,
                    "replica_removed",
                    f"Replica {replica.index} removed.",
                    {"replica": replica.index, "container_id": replica.container_id},
                )
            elif action.reason == "replaced":
                lifecycle.record_event(
                    deployment,
                    "replica_replaced",
                    f"Rolling restart: replaced replica {replica.index}.",
                    {
                        "replica": replica.index,
                        "old_container_id": replica.container_id,
                        "generation": deployment.generation,
                    },
                )
            elif action.reason == "restart" and replica.index in self.instances:
                self.instances[replica.index].next_restart_at = None

    def _start(self, actions: list[p.StartReplica], *, while_removing: list[p.RemoveReplica]) -> bool:
        """Start the replicas of `actions`, removing those of `while_removing` meanwhile.

        The engine calls of the starts run on a thread of their own while this one removes (the removal
        stores the lines of what it removes in the deployment's transaction, which lives on this thread);
        what started is recorded once both are done.
        """
        deployment = self.deployment
        workload = self._workload()
        if workload is None:
            if while_removing:
                self._remove(while_removing)
            return False
        for action in actions:
            if action.missing:
                self.instances[action.index].restarts += 1
                lifecycle.record_event(
                    deployment,
                    "container_missing",
                    f"Replica {action.index}'s container disappeared; recreating it.",
                    {"replica": action.index, "container_id": action.missing},
                )
        indices = [action.index for action in actions]
        if while_removing:
            started = _Background(self.x.driver.start, workload, indices, self.observation.used_ports)
            try:
                self._remove(while_removing)
            finally:
                results = started.result()
        else:
            results = self.x.driver.start(workload, indices, self.observation.used_ports)
        now = utcnow()
        for index, result in zip(indices, results, strict=True):
            instance = self.instances[index]
            if isinstance(result, EngineUnavailable):
                raise result
            if isinstance(result, ImageUnavailable):
                deployment.image_ready = False
                lifecycle.record_event(deployment, "image_missing", f"{result.message} Preparing it again.")
                return False
            if isinstance(result, Exception):
                lifecycle.transition(
                    deployment,
                    DeploymentStatus.FAILED,
                    f"Replica {index} could not start.",
                    error=f"Replica {index} could not start: {result}",
                )
                return False
            self._started.append(result)
            restarted = instance.container_id is not None
            instance.container_id = result.container_id
            instance.generation = workload.generation
            instance.status = InstanceStatus.RUNNING if result.running else result.state
            instance.host = result.host or self.x.settings.replica_host
            instance.port = result.port
            instance.started_at = now
            instance.exit_code = None
            instance.healthy = None
            instance.health_failures = 0
            instance.next_restart_at = None
            lifecycle.record_event(
                deployment,
                "container_restarted" if restarted else "container_started",
                f"Replica {index} {'restarted' if restarted else 'started'} on port {instance.port}.",
                {"replica": index, "container_id": result.container_id, "port": instance.port},
            )
        return True

    # -- services ---------------------------------------------------------------------------------

    def _apply(self, action: p.ApplySpec) -> bool:
        deployment = self.deployment
        workload = self._workload()
        if workload is None:
            return False
        service = self.observation.services.get(deployment.id)
        try:
            data = self.x.driver.apply(
                workload,
                replicas=action.replicas,
                service=service,
                used_blocks=self.observation.used_blocks,
                watched=not action.back,
            )
        except ImageUnavailable as exc:
            deployment.image_ready = False
            lifecycle.record_event(deployment, "image_missing", f"{exc.message} Preparing it again.")
            return False
        except ReplicaStartFailed as exc:
            lifecycle.transition(
                deployment, DeploymentStatus.FAILED, "The service could not be applied.", error=exc.message
            )
            return False
        if action.change == "create":
            lifecycle.record_event(
                deployment, "service_created", f"Swarm service created with {action.replicas} replica(s).", data
            )
        elif action.change == "update":
            lifecycle.record_event(
                deployment,
                "rolling_update",
                f"Rolling update back to generation {action.generation} (start-first)."
                if action.back
                else f"Rolling update to generation {action.generation} (start-first, rollback on failure).",
                data,
            )
        else:
            lifecycle.record_event(
                deployment,
                "service_scaled",
                f"Swarm service scaled from {action.from_replicas} to {action.replicas} replica(s).",
                {**data, "from": action.from_replicas},
            )
        return True

    # -- observations -----------------------------------------------------------------------------

    def _note_exit(self, action: p.NoteExit) -> None:
        """Count an exit (status, counters, an OOM's `memory_high`, a `container_exited` event); fail the
        deployment when it spent the restart budget, else schedule (or announce) the restart."""
        deployment, instance, replica = self.deployment, self.instances[action.index], action.replica
        info = self.x.driver.exit_info(replica)
        instance.container_id = replica.container_id
        instance.status = InstanceStatus.EXITED
        instance.healthy = False
        instance.exit_code = info.exit_code
        instance.restarts += 1
        instance.recent_restarts = action.attempt
        reason = " (killed: out of memory)" if info.oom_killed else ""
        if info.oom_killed:
            self.x.oom.note(deployment.id)
            finding = alerts.memory_rule(deployment, oom_recently=True)
            alerts.observe(deployment, "memory_high", finding, known=self.x.open_alerts)
        data: dict[str, object] = {"replica": action.index, "container_id": replica.container_id}
        if replica.task_id is not None:
            data.update(task_id=replica.task_id, task_state=replica.task_state)
        lifecycle.record_event(
            deployment,
            "container_exited",
            f"Replica {action.index} exited with code {info.exit_code}{reason}.",
            {**data, "exit_code": info.exit_code, "oom_killed": info.oom_killed, "error": info.error},
        )
        if action.rolls_back:
            return
        if action.fails:
            instance.status = InstanceStatus.FAILED
            budget = self.x.settings.restart_budget
            if action.never:
                lifecycle.transition(
                    deployment,
                    DeploymentStatus.FAILED,
                    f"Replica {action.index} exited with code {info.exit_code}; restart policy never.",
                    error=f"Replica {action.index} exited with code {info.exit_code}{reason}; its restart policy "
                    "is never.",
                )
                return
            lifecycle.transition(
                deployment,
                DeploymentStatus.FAILED,
                f"Replica {action.index} kept crashing ({action.attempt - 1} restarts).",
                error=f"Replica {action.index} kept crashing: last exit code {info.exit_code}{reason}; "
                f"restart budget of {budget} spent ({action.attempt - 1} restarts).",
            )
            return
        delay = action.restart_in
        if action.by_engine:
            message = f"Swarm restarts replica {action.index} in {delay:g}s (attempt {action.attempt})."
        else:
            instance.next_restart_at = self.now + timedelta(seconds=delay)
            message = f"Replica {action.index} restarts in {delay:g}s (attempt {action.attempt})."
        lifecycle.record_event(
            deployment,
            "restart_backoff",
            message,
            {"replica": action.index, "delay_seconds": delay, "attempt": action.attempt},
        )

    def _succeeded(self, action: p.ReplicaSucceeded) -> None:
        """A job's replica exited 0: done (`succeeded`, its exit code kept), with a `replica_succeeded` event."""
        deployment, instance, replica = self.deployment, self.instances[action.index], action.replica
        instance.container_id = replica.container_id
        instance.generation = replica.generation
        instance.status = InstanceStatus.SUCCEEDED
        instance.exit_code = 0
        instance.healthy = None
        instance.next_restart_at = None
        data: dict[str, object] = {"replica": action.index, "container_id": replica.container_id, "exit_code": 0}
        if replica.task_id is not None:
            data.update(task_id=replica.task_id, task_state=replica.task_state)
        lifecycle.record_event(deployment, "replica_succeeded", f"Replica {action.index} exited 0: done.", data)

    def _observe_running(self, action: p.ObserveRunning) -> None:
        deployment, instance, replica = self.deployment, self.instances[action.index], action.replica
        if action.event is not None:
            data: dict[str, object] = {"replica": action.index, "container_id": replica.container_id}
            if action.event == "container_adopted":
                message = f"Replica {action.index}'s running container was adopted."
                instance.started_at = instance.started_at or replica.created_at or self.now
            else:
                text = {
                    "container_started": "started",
                    "replica_replaced": "replaced by the rolling update",
                    "container_restarted": "restarted by Swarm",
                }[action.event]
                message = f"Replica {action.index} {text} on port {replica.port}."
                data["port"] = replica.port
                if action.event == "replica_replaced":
                    data["generation"] = replica.generation
                instance.started_at = self.now  # our clock: the stable period is measured alike for both
                instance.exit_code = None
            lifecycle.record_event(deployment, action.event, message, data)
            instance.container_id = replica.container_id
            instance.healthy = None
            instance.health_failures = 0
        instance.status = InstanceStatus.RUNNING
        instance.generation = replica.generation
        instance.host = replica.host
        instance.port = replica.port or instance.port
        instance.next_restart_at = None
        if action.reset_restarts:
            instance.recent_restarts = 0

    def _roll_back(self, action: p.RollBack) -> None:
        """Back to the generation that still serves: the releases and events, and a `rollout_failed` alert."""
        deployment = self.deployment
        failed = lifecycle.roll_back(deployment, generation=action.generation, reason=action.reason, error=action.error)
        number = failed.number if failed is not None else deployment.revision
        message = f"Rollout of release {number} failed; release {deployment.revision} still serves: {action.error}"
        alerts.observe(
            deployment,
            AlertKind.ROLLOUT_FAILED,
            (message, {"release": number, "generation": action.generation}),
            known=self.x.open_alerts,
        )

    def _wind_down(self) -> None:
        """Remove what the deployment has on the engine; every slot `stopped`; a stop on request recorded."""
        deployment, observed = self.deployment, self.observed
        replicas = tuple(r for r in (*observed.replicas, *self._started) if r.container_id not in self._removed)
        event = self.x.driver.wind_down(deployment.id, p.Observed(replicas, observed.exits, observed.service))
        if event is not None:
            lifecycle.record_event(deployment, event.kind, event.message, event.data)
        for instance in deployment.instances:
            if instance.status in _OUTCOMES:  # what the replica's run ended as stays, with its exit code
                instance.container_id = None
                instance.healthy = None
                instance.next_restart_at = None
            elif instance.container_id or instance.status not in (InstanceStatus.STOPPED, InstanceStatus.EXITED):
                instance.container_id = None
                instance.status = InstanceStatus.STOPPED
                instance.healthy = None
                instance.next_restart_at = None
        if deployment.desired_state != DesiredState.RUNNING and deployment.status != DeploymentStatus.STOPPED:
            what = self.x.driver.wound_down
            lifecycle.transition(deployment, DeploymentStatus.STOPPED, f"Stopped on request; {what}.")


def _judged_after(check: dict[str, Any] | None) -> float:
    """How long a new replica with this health check runs before its checks can have failed it (0: none)."""
    if not check:
        return 0.0
    interval = float(check.get("interval_seconds", 10.0))
    return interval * int(check.get("retries", 3)) + float(check.get("timeout_seconds", 5.0))
