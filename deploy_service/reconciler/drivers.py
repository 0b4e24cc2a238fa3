"""Drivers: how the executor's actions reach one kind of engine.

The planner (`plan.py`) decides; the executor (`executor.py`) writes the database and calls a driver for
anything on the engine. A driver observes every deployment in a few engine calls (as `plan.Observed`,
replicas in the runner's one value type `ReplicaInfo`) and carries out the engine side of the actions:

- `ContainerDriver`: containers on one engine, started, restarted and removed one by one by the reconciler
  (`DockerRunner`); host networking gets a free port per replica, bridge networking a network per
  deployment (made by the runner as a replica starts), removed with the deployment's containers when it
  winds down, or swept with the orphans once the deployment is gone. In host mode no network is made, so
  the labelled networks are listed on the first pass only (and while that finds some, left from a
  bridge-mode past, until they are swept): a deploy's passes make no listing call.
- `ServiceDriver`: one engine-managed service per deployment (`SwarmRunner`): the driver applies specs
  (create, scale, start-first rolling update with rollback on failure, each generation on its own block of
  100 ports) and reports the tasks that ended on their own, each once.

Orphans (replicas, services or networks carrying our labels whose deployment is not live) are removed item by item:
one that cannot be removed is logged and retried next pass, and never stops the others nor the pass.
Engine calls that can be slow run in parallel on the reconciler's pool.

Every removal keeps the last `LOG_KEEP_LINES_PER_REPLICA` lines of what it removes (`KeptLogs`): a container
is stopped, read, its lines handed to the driver's `keep` (the executor stores them), and only then removed,
so its last words are kept too and are stored before the container is gone. A read that fails is logged and
what it got is kept; it never stops the removal. A Swarm service's containers are read (every task that
still has one, current or past) and kept before the service is removed.
"""

from __future__ import annotations

import abc
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

from deploy_service.models import AgentKind, RestartPolicy
from deploy_service.reconciler.plan import Observed, ServiceState
from deploy_service.reconciler.ports import free_block, free_port
from deploy_service.reconciler.settings import ReconcileSettings
from deploy_service.runner.base import (
    EngineUnavailable,
    ExitInfo,
    LogLine,
    RegistryCredentials,
    ReplicaInfo,
    ReplicaSpec,
    Runner,
    RunnerError,
    ServiceInfo,
    ServiceRunner,
    ServiceSpec,
)
from deploy_service.runner.swarm_records import MAX_REPLICAS
from deploy_service.runner.swarm_runner import current_tasks, task_replica

log = logging.getLogger(__name__)
T = TypeVar("T")
OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Workload:
    """What one generation of a deployment runs, resolved by the executor (secrets included)."""

    deployment_id: str
    agent_id: str
    generation: int
    image: str
    port: int
    """The port the agent listens on (bridge networking); host networking gets a free one per replica."""
    env: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] | None = None
    cpu: float = 0.5
    memory_mb: int = 512
    read_only_rootfs: bool = True
    run_as_user: str | None = None
    built: bool = False
    registry_auth: RegistryCredentials | None = None
    """The agent's registry login, for an engine that pulls the image itself on each node (Swarm)."""
    kind: str = AgentKind.SERVICE
    restart_policy: str = RestartPolicy.ALWAYS
    judged_after: float = 0.0
    """Seconds a new replica runs before it is judged: with an HTTP health check, the time its checks take to
    fail it (`interval × retries + timeout`); without one, 0 (the start-up grace applies)."""


def restart_condition(kind: str, restart_policy: str) -> str:
    """The Swarm restart condition for an agent's kind and restart policy.

    A job is a replicated service whose tasks run to completion with the condition `on-failure`: a task that
    exits 0 is `complete` and never replaced, one that exits non-zero is restarted by the engine (the planner
    counts it against the restart budget, as for containers). `Mode: ReplicatedJob` (engine API 1.41+) was
    the other way; it is not used because it has no update config and reruns only as a new service, so
    the spec, the observation of tasks, the rolling update and its rollback would all differ from a
    service's, where this keeps one code path for both kinds. `never` is `none` (the first exit ends
    the replica; the planner fails the deployment). A service is not meant to exit: `on-failure` is `any`.
    """
    if restart_policy == RestartPolicy.NEVER:
        return "none"
    return "on-failure" if kind == AgentKind.JOB else "any"


@dataclass(frozen=True)
class EngineEvent:
    """An event the executor records for something the driver did on the engine."""

    kind: str
    message: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class KeptLogs:
    """The last lines of a container the driver removed (or is about to), for the executor to store."""

    deployment_id: str
    replica: int
    container_id: str
    generation: int
    lines: tuple[LogLine, ...]


@dataclass
class Observation:
    """Everything the engine runs for us, read at the start of a pass."""

    views: dict[str, Observed]
    """Per deployment id."""
    containers: set[str]
    """Ids of the containers that run replicas now (health-check schedules of others are dropped)."""
    used_ports: set[int] = field(default_factory=set)
    used_blocks: set[int] = field(default_factory=set)
    services: dict[str, ServiceInfo] = field(default_factory=dict)
    networks: set[str] = field(default_factory=set)
    """Deployments that have a network of their own (bridge mode)."""

    def of(self, deployment_id: str) -> Observed:
        return self.views.get(deployment_id) or Observed()


def _dropped(kept: Sequence[KeptLogs]) -> None:
    """The `keep` of a driver nobody stores lines for."""


class Driver(abc.ABC):
    """The engine side of the executor's actions for one kind of runner."""

    engine_keeps_replicas: bool = False
    max_replicas: int | None = None

    def __init__(
        self,
        runner: Runner,
        settings: ReconcileSettings,
        pool: ThreadPoolExecutor,
        keep: Callable[[Sequence[KeptLogs]], None] = _dropped,
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.pool = pool
        self.keep = keep
        """Called with the lines of what is about to be removed, before it is removed; never raises."""

    wound_down: str = "containers removed"
    """How the wind-down reads in the `stopped` event."""

    @abc.abstractmethod
    def observe(self) -> Observation:
        """Read what the engine runs for every deployment, in a few engine calls.

        Raises:
            EngineUnavailable: the engine did not answer.
        """

    @abc.abstractmethod
    def remove_orphans(self, observation: Observation, live: set[str]) -> None:
        """Remove what carries our labels but belongs to no live deployment, item by item, their lines kept.

        Raises:
            EngineUnavailable: the engine stopped answering (every item was still tried).
        """

    @abc.abstractmethod
    def wind_down(self, deployment_id: str, observed: Observed) -> EngineEvent | None:
        """Remove everything the deployment has on the engine; the event to record if something went."""

    def exit_info(self, replica: ReplicaInfo) -> ExitInfo:
        """Why a replica ended: the container's inspect where it is local, else what the engine reported."""
        reported = ExitInfo(exit_code=replica.exit_code, oom_killed=False, error=replica.error)
        if replica.task_id is not None and replica.container_id == replica.task_id:
            return reported  # a task that never got a container
        try:
            local = self.runner.exit_info(replica.container_id)
        except EngineUnavailable:
            raise  # an outage is not an exit: the pass is retried
        except RunnerError as exc:  # removed since the list, or on another node
            return reported if replica.task_id else ExitInfo(replica.exit_code, oom_killed=False, error=exc.message)
        return ExitInfo(
            exit_code=replica.exit_code if replica.exit_code is not None else local.exit_code,
            oom_killed=local.oom_killed,
            error=replica.error or local.error,
        )

    def start(self, workload: Workload, indices: Sequence[int], used_ports: set[int]) -> list[ReplicaInfo | Exception]:
        """Start the replicas of `indices` (containers only): per replica, what runs or why it did not."""
        raise NotImplementedError(f"the {self.runner.name} runner's engine starts replicas itself")

    def remove(self, replicas: Sequence[ReplicaInfo]) -> None:
        """Stop and read containers, keep their lines, then remove them (containers only). A failure other
        than an outage is logged."""
        raise NotImplementedError(f"the {self.runner.name} runner's engine removes replicas itself")

    def apply(
        self,
        workload: Workload,
        *,
        replicas: int,
        service: ServiceInfo | None,
        used_blocks: set[int],
        watched: bool = True,
    ) -> dict[str, object]:
        """Create or update the deployment's service (services only); the facts to record with the event."""
        raise NotImplementedError(f"the {self.runner.name} runner does not run services")

    # -- shared ---------------------------------------------------------------------------------------

    def keep_logs(self, deployment_id: str, index: int, generation: int, container: str) -> KeptLogs | None:
        """The container's last `log_keep_lines` lines (None when none are kept); never raises.

        A read that fails part way is logged, and the lines it got are kept.
        """
        keep = self.settings.log_keep_lines
        if keep <= 0:
            return None
        lines: list[LogLine] = []
        try:
            for line in self.runner.logs(container, replica=index, tail=keep):
                lines.append(line)
        except Exception as exc:  # noqa: BLE001 - a read that fails never blocks the removal
            log.warning(
                "could not read the logs of %s before its removal (%s); kept %d line(s)", container, exc, len(lines)
            )
        return KeptLogs(deployment_id, index, container, generation, tuple(lines[-keep:]))

    def _each(self, call: Callable[[T], object], items: Iterable[T], what: str) -> None:
        """Run `call` on every item in parallel; log each failure, re-raise an outage after all have run."""
        outage: EngineUnavailable | None = None
        for item, error in zip(items, self.pool.map(lambda i: _error_of(call, i), list(items)), strict=False):
            if isinstance(error, EngineUnavailable):
                outage = error
            elif error is not None:
                log.warning("could not remove %s %s: %s", what, item, error)
        if outage is not None:
            raise outage


def _error_of(call: Callable[[T], object], item: T) -> Exception | None:
    try:
        call(item)
    except Exception as exc:  # noqa: BLE001 - sorted out by the caller, item by item
        return exc
    return None


class ContainerDriver(Driver):
    """Replicas as containers the reconciler starts, restarts and removes itself."""

    def __init__(
        self,
        runner: Runner,
        settings: ReconcileSettings,
        pool: ThreadPoolExecutor,
        keep: Callable[[Sequence[KeptLogs]], None] = _dropped,
    ) -> None:
        super().__init__(runner, settings, pool, keep)
        self._networks: set[str] = set()
        """Deployments with a network of their own, as of the last observation (less those removed since)."""
        self._networks_listed = False

    def observe(self) -> Observation:
        replicas = self.runner.list_replicas()
        if self._networks_wanted():
            self._networks = self.runner.list_networks()
            self._networks_listed = True
        networks = self._networks
        by_deployment: dict[str, list[ReplicaInfo]] = defaultdict(list)
        for replica in replicas:
            by_deployment[replica.deployment_id].append(replica)
        return Observation(
            views={d: Observed(replicas=tuple(found)) for d, found in by_deployment.items()},
            containers={replica.container_id for replica in replicas},
            used_ports={replica.port for replica in replicas if replica.port},
            networks=set(networks),
        )

    def _networks_wanted(self) -> bool:
        """Whether this pass lists the labelled networks: every pass in bridge mode, where each deployment
        makes one; in host mode, where none is made, the first pass and then only while the last listing
        found some (left from a bridge-mode past, swept as orphans), so a deploy costs no listing."""
        return not self._networks_listed or bool(self._networks) or self.runner.network_mode() == "bridge"

    def remove_orphans(self, observation: Observation, live: set[str]) -> None:
        orphans = [r for d, view in observation.views.items() if d not in live for r in view.replicas]
        if orphans:
            log.info("removing %d orphaned container(s)", len(orphans))
            self.remove(orphans)
        networks = sorted(observation.networks - live)
        if networks:
            log.info("removing %d orphaned network(s)", len(networks))
            self._each(self._remove_network, networks, "the network of deployment")

    def _remove_network(self, deployment_id: str) -> None:
        self.runner.remove_network(deployment_id)
        self._networks.discard(deployment_id)

    def start(self, workload: Workload, indices: Sequence[int], used_ports: set[int]) -> list[ReplicaInfo | Exception]:
        network = self.runner.network_mode()
        specs = [
            ReplicaSpec(
                deployment_id=workload.deployment_id,
                agent_id=workload.agent_id,
                index=index,
                generation=workload.generation,
                image=workload.image,
                port=self._host_port(used_ports) if network == "host" else workload.port,
                env=workload.env,
                command=workload.command,
                cpu=workload.cpu,
                memory_mb=workload.memory_mb,
                read_only_rootfs=workload.read_only_rootfs,
                run_as_user=workload.run_as_user,
                network_mode=network,
            )
            for index in indices
        ]
        return list(self.pool.map(self._start_one, specs))

    def _host_port(self, used_ports: set[int]) -> int:
        """A free port of `HOST_PORT_RANGE` on the engine host (looked at through `REPLICA_HOST`)."""
        settings = self.settings
        return free_port(
            used_ports, settings.port_range, host=settings.replica_host, timeout=settings.port_probe_timeout
        )

    def _start_one(self, spec: ReplicaSpec) -> ReplicaInfo | Exception:
        try:
            info = self.runner.start_replica(spec)
        except Exception as exc:  # noqa: BLE001 - sorted out by the executor, per replica
            return exc
        return info if info.port else _with_port(info, spec.port)

    def remove(self, replicas: Sequence[ReplicaInfo]) -> None:
        timeout = self.settings.stop_timeout
        read: dict[str, KeptLogs] = {}
        stopped: list[ReplicaInfo] = []

        def stop_and_read(replica: ReplicaInfo) -> None:
            if self.settings.log_keep_lines > 0 and not replica.exited:
                try:
                    self.runner.stop_replica(replica.container_id, stop_timeout=timeout)
                except EngineUnavailable:
                    raise
                except RunnerError as exc:  # removed by force below
                    log.info("stopping %s failed (%s)", replica.container_id, exc)
            found = self.keep_logs(replica.deployment_id, replica.index, replica.generation, replica.container_id)
            if found is not None:
                read[replica.container_id] = found
            stopped.append(replica)

        try:
            self._each(stop_and_read, replicas, "container")
        finally:  # what was read is kept even when the engine went away part way
            kept = [read[r.container_id] for r in replicas if r.container_id in read]
            if kept:
                self.keep(kept)
        done = {replica.container_id for replica in stopped}
        self._each(
            lambda replica: self.runner.remove_replica(replica.container_id, stop_timeout=timeout),
            [replica for replica in replicas if replica.container_id in done],
            "container",
        )

    def wind_down(self, deployment_id: str, observed: Observed) -> EngineEvent | None:
        replicas = observed.replicas
        if replicas:
            self.remove(replicas)
        if deployment_id in self._networks:  # after its containers: a network with members cannot go
            self._each(self._remove_network, [deployment_id], "the network of deployment")
        if not replicas:
            return None
        return EngineEvent(
            "containers_removed",
            f"Removed {len(replicas)} container(s).",
            {"container_ids": [replica.container_id for replica in replicas]},
        )


def _with_port(info: ReplicaInfo, port: int) -> ReplicaInfo:
    return replace(info, port=port)


class ServiceDriver(Driver):
    """Replicas as the tasks of one engine-managed service per deployment."""

    engine_keeps_replicas = True
    max_replicas = MAX_REPLICAS
    wound_down = "service removed"

    def __init__(
        self,
        runner: Runner,
        settings: ReconcileSettings,
        pool: ThreadPoolExecutor,
        keep: Callable[[Sequence[KeptLogs]], None] = _dropped,
    ) -> None:
        if not isinstance(runner, ServiceRunner):
            raise TypeError(f"the {runner.name} runner does not run services")
        super().__init__(runner, settings, pool, keep)
        self.services: ServiceRunner = runner
        self._seen_exits: set[str] = set()
        """Tasks whose end was reported (or seen when adopting a service this process did not create)."""
        self._known: set[str] = set()
        """Deployments whose service this process created or has observed."""
        self._services: dict[str, ServiceInfo] = {}
        """The services of the last observation: their tasks' containers are read before a removal."""

    def observe(self) -> Observation:
        services = self.services.list_services()
        views: dict[str, Observed] = {}
        containers: set[str] = set()
        used_blocks: set[int] = set()
        for service in services:
            used_blocks |= service.port_blocks
            current = [task_replica(service, task) for task in current_tasks(service).values()]
            containers |= {task.container_id for task in current_tasks(service).values() if task.container_id}
            adopting = service.deployment_id not in self._known
            exits = []
            for task in service.tasks:
                if not task.failed or task.task_id in self._seen_exits:
                    continue
                self._seen_exits.add(task.task_id)
                if not adopting:
                    exits.append(task_replica(service, task))
            views[service.deployment_id] = Observed(
                replicas=tuple(sorted(current, key=lambda r: r.index)),
                exits=tuple(exits),
                service=ServiceState(
                    generation=service.generation,
                    replicas=service.replicas,
                    update_state=service.update_state,
                    update_message=service.update_message,
                    previous_generation=service.previous_generation,
                ),
            )
        # Swarm prunes old tasks (and we remove services): forget what can never be listed again.
        self._seen_exits &= {task.task_id for service in services for task in service.tasks}
        self._known = {service.deployment_id for service in services}
        self._services = {service.deployment_id: service for service in services}
        return Observation(
            views=views,
            containers=containers,
            used_blocks=used_blocks,
            services={service.deployment_id: service for service in services},
        )

    def remove_orphans(self, observation: Observation, live: set[str]) -> None:
        orphans = [deployment_id for deployment_id in observation.services if deployment_id not in live]
        if not orphans:
            return
        log.info("removing %d orphaned service(s)", len(orphans))
        timeout = self.settings.stop_timeout
        self._keep_service_logs(orphans)
        self._each(lambda d: self.services.remove_service(d, stop_timeout=timeout), orphans, "service")

    def _keep_service_logs(self, deployment_ids: Sequence[str]) -> None:
        """The lines of every container the services' tasks still have (current and past ones), in parallel.

        Swarm keeps the containers of a few past tasks per replica (its task history): a replica that
        crashed and was restarted by Swarm, or one replaced by a rolling update, is read here if its
        container is still listed; one Swarm already pruned has nothing left to read.
        """
        tasks = sorted(
            (
                (task.created_at or OLDEST, deployment_id, task.index, task.generation, task.container_id)
                for deployment_id in deployment_ids
                if (service := self._services.get(deployment_id)) is not None
                for task in service.tasks
                if task.container_id
            ),
            key=lambda item: item[0],
        )
        found = self.pool.map(lambda item: self.keep_logs(item[1], item[2], item[3], str(item[4])), tasks)
        kept = [lines for lines in found if lines is not None]  # oldest task first: the order they are stored in
        if kept:
            self.keep(kept)

    def apply(
        self,
        workload: Workload,
        *,
        replicas: int,
        service: ServiceInfo | None,
        used_blocks: set[int],
        watched: bool = True,
    ) -> dict[str, object]:
        same_generation = service is not None and service.generation == workload.generation
        if same_generation and service is not None and service.port_block is not None:
            block = service.port_block
        else:
            block = free_block(used_blocks, self.settings.port_range, replicas)
        settings = self.settings
        self.services.apply_service(
            ServiceSpec(
                deployment_id=workload.deployment_id,
                agent_id=workload.agent_id,
                generation=workload.generation,
                image=workload.image,
                replicas=replicas,
                port_block=block,
                env=workload.env,
                command=workload.command,
                cpu=workload.cpu,
                memory_mb=workload.memory_mb,
                read_only_rootfs=workload.read_only_rootfs,
                run_as_user=workload.run_as_user,
                restart_delay=settings.backoff_base,
                restart_attempts=settings.restart_budget,
                restart_window=settings.stable_seconds,
                restart_condition=restart_condition(workload.kind, workload.restart_policy),
                stop_timeout=settings.stop_timeout,
                # A task is replaced by the next slot's only once it has run this long without failing, and a
                # failure within it is the update's: Swarm knows when a task runs, not when our health check
                # passes, so a new release that crashes is rolled back while the old tasks of the other slots
                # still serve (they are not touched until then).
                update_monitor=max(settings.startup_grace, workload.judged_after),
                update_delay=max(settings.startup_grace, workload.judged_after),
                update_parallelism=settings.max_surge,
                watched=watched,
                built=workload.built,
                registry_auth=workload.registry_auth,
            )
        )
        self._known.add(workload.deployment_id)
        return {"generation": workload.generation, "replicas": replicas, "port_block": block}

    def wind_down(self, deployment_id: str, observed: Observed) -> EngineEvent | None:
        if observed.service is None:
            return None  # none listed at the start of this pass: nothing to remove
        self._keep_service_logs([deployment_id])
        if not self.services.remove_service(deployment_id, stop_timeout=self.settings.stop_timeout):
            return None
        return EngineEvent("service_removed", "Swarm service removed with its containers.")


def driver_for(
    runner: Runner,
    settings: ReconcileSettings,
    pool: ThreadPoolExecutor,
    keep: Callable[[Sequence[KeptLogs]], None] = _dropped,
) -> Driver:
    """The driver for `runner`: services for a backend whose engine keeps replicas, containers otherwise."""
    if isinstance(runner, ServiceRunner):
        return ServiceDriver(runner, settings, pool, keep)
    return ContainerDriver(runner, settings, pool, keep)
