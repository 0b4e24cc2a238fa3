"""The runner interface: what the service asks of a container engine, in the service's own terms.

A runner starts and stops *replicas* (one container each), lists the ones it manages, reads their
logs and stats, and gets images ready (local, pulled, or built from a git source). It returns the
small value objects below, raises the errors of `runner.errors` (`EngineUnavailable` when the engine
cannot be reached), and never touches the database. The reconciler decides *when* to call it; the runner
only knows *how*. A Docker backend implements it today; a Swarm backend can plug in beside it
without changes to `api/` or `services/`.

Every managed container carries the labels below, and a deterministic name derived from its
deployment, replica index and generation, so a create that is retried adopts the existing container
instead of making a second one.

A backend whose engine keeps replicas alive itself (Docker Swarm) is a `ServiceRunner`: it also implements
the service methods (`apply_service`, `remove_service`, `list_services`), one service per deployment,
its tasks read as `TaskInfo`. Either way the reconciler observes replicas as `ReplicaInfo` (a container,
or the task that stands for a replica now); its driver for the backend picks the calls.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from deploy_service.runner.cancellation import Cancellation
from deploy_service.runner.errors import (
    BuildCancelled,
    BuildFailed,
    ContainerGone,
    EngineUnavailable,
    ImageUnavailable,
    ReplicaStartFailed,
    RunnerConfigError,
    RunnerError,
)

__all__ = [
    "BuildCancelled",
    "BuildFailed",
    "ContainerGone",
    "BuildSpec",
    "Cancellation",
    "EngineUnavailable",
    "ExitInfo",
    "ImageInfo",
    "ImageUnavailable",
    "LABEL_AGENT",
    "LABEL_DEPLOYMENT",
    "LABEL_GENERATION",
    "LABEL_MANAGED",
    "LABEL_REPLICA",
    "LogLine",
    "RegistryCredentials",
    "ReplicaInfo",
    "ReplicaSpec",
    "ReplicaStartFailed",
    "Runner",
    "RunnerConfigError",
    "RunnerError",
    "ServiceInfo",
    "ServiceRunner",
    "ServiceSpec",
    "Stats",
    "TaskInfo",
    "replica_name",
]

LABEL_MANAGED = "deploy-service.managed"
LABEL_DEPLOYMENT = "deploy-service.deployment"
LABEL_AGENT = "deploy-service.agent"
LABEL_REPLICA = "deploy-service.replica"
LABEL_GENERATION = "deploy-service.generation"


def replica_name(deployment_id: str, index: int, generation: int) -> str:
    """The deterministic container name of one replica of one generation of a deployment."""
    return f"ds-{deployment_id}-r{index}-g{generation}"


@dataclass(frozen=True)
class RegistryCredentials:
    """An agent's login to one registry, sent with its pull, its build's FROM pulls or its Swarm service.

    The password is the value of the agent's stored secret: it is left out of `repr`, so a logged or
    raised value never shows it.
    """

    registry: str
    """`host[:port]` as the engine names it; `docker.io` for Docker Hub."""
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything needed to start one replica."""

    deployment_id: str
    agent_id: str
    index: int
    generation: int
    image: str
    port: int
    """The port the agent listens on, passed in `PORT` (host networking: a free host port)."""
    env: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] | None = None
    cpu: float = 0.5
    memory_mb: int = 512
    read_only_rootfs: bool = True
    run_as_user: str | None = None
    """The agent's `uid[:gid]`, over the image's user; None: the image's if numeric and not 0, else the default."""
    network_mode: str = "host"
    """`host` (the replica listens on `port` of the host) or `bridge` (its port published on `publish_host`)."""

    @property
    def name(self) -> str:
        return replica_name(self.deployment_id, self.index, self.generation)


@dataclass(frozen=True)
class ReplicaInfo:
    """What the engine says about one managed container."""

    container_id: str
    name: str
    deployment_id: str
    agent_id: str
    index: int
    generation: int
    state: str
    """Engine state: created, running, restarting, paused, exited, dead or removing."""
    exit_code: int | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    """Where the service reaches the replica's HTTP port, if it has one."""
    created_at: datetime | None = None
    task_id: str | None = None
    """Engine-managed replicas: the task this is (its container, if any, is `container_id`)."""
    task_state: str = ""
    """Engine-managed replicas: the engine's own task state."""
    error: str = ""
    """Engine-managed replicas: why the task ended, in the engine's words."""

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def exited(self) -> bool:
        return self.state in {"exited", "dead"}


@dataclass(frozen=True)
class ServiceSpec:
    """Everything needed to run a deployment as one engine-managed service of `replicas` replicas.

    For backends that keep replicas alive themselves (`ServiceRunner`). Host networking: replica
    `i` listens on `port_block * 100 + i + 1`; a new generation gets a new block, so during a start-first
    rolling update the old and the new task of a replica never want the same port.
    """

    deployment_id: str
    agent_id: str
    generation: int
    image: str
    replicas: int
    port_block: int
    env: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] | None = None
    cpu: float = 0.5
    memory_mb: int = 512
    read_only_rootfs: bool = True
    run_as_user: str | None = None
    """As `ReplicaSpec.run_as_user`."""
    restart_delay: float = 5.0
    """Seconds the engine waits before restarting an exited replica."""
    restart_attempts: int = 3
    """Restarts the engine makes within `restart_window` before it gives up on a replica."""
    restart_window: float = 300.0
    restart_condition: str = "any"
    """The engine's restart condition: `any` (a service), `on-failure` (a job: a task that exits 0 is
    `complete` and never replaced) or `none` (restart policy `never`: the first exit ends the replica)."""
    stop_timeout: float = 10.0
    update_monitor: float = 5.0
    """Seconds the engine watches each updated replica for a failure (which rolls the update back)."""
    update_delay: float = 0.0
    """Seconds between the update of one batch of tasks and the next (Swarm's `UpdateConfig.Delay`)."""
    update_parallelism: int = 1
    """Tasks Swarm replaces at once, start-first (`ROLLOUT_MAX_SURGE`)."""
    watched: bool = True
    """The update pauses at the first failure of a task it replaced (a rollout of something new, which the
    planner then rolls back). False for a return to a generation that already served (the automatic
    rollback): the update goes on through a task's failure, which the restart budget counts as for any
    running release, rather than stopping halfway with nothing to go back to."""
    built: bool = False
    """The image was built here from a git source (a multi-node backend may push it to a registry)."""
    registry_auth: RegistryCredentials | None = None
    """The agent's credentials for its image's registry, for the nodes that pull it (never stored in the spec)."""

    def port(self, index: int) -> int:
        return self.port_block * 100 + index + 1


@dataclass(frozen=True)
class TaskInfo:
    """One task (one attempt at running one replica) of an engine-managed service."""

    task_id: str
    index: int
    generation: int
    state: str
    """Mapped onto container states: created, running, exited or dead."""
    task_state: str
    """The engine's own task state (new ... running, complete, failed, shutdown, rejected, orphaned)."""
    desired_state: str
    container_id: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    exit_code: int | None = None
    error: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def ended(self) -> bool:
        return self.state in {"exited", "dead"}

    @property
    def failed(self) -> bool:
        """It ended on its own (crash, exit, kill, refusal), not because it was asked to stop."""
        return self.task_state in {"failed", "complete", "rejected", "orphaned"}


@dataclass(frozen=True)
class ServiceInfo:
    """What the engine says about one deployment's service and its tasks (current and past)."""

    service_id: str
    deployment_id: str
    agent_id: str
    generation: int
    replicas: int
    port_blocks: frozenset[int]
    """Port blocks of the current and the previous spec (both may have live tasks during an update)."""
    port_block: int | None
    update_state: str = ""
    """The engine's rolling-update state: "", updating, paused, completed, rollback_started, ..."""
    update_message: str = ""
    tasks: tuple[TaskInfo, ...] = ()
    previous_generation: int | None = None
    """The generation of the spec the service ran before its last update (the engine's `PreviousSpec`)."""


@dataclass(frozen=True)
class ExitInfo:
    """Why a container stopped."""

    exit_code: int | None
    oom_killed: bool
    error: str = ""
    finished_at: datetime | None = None


@dataclass(frozen=True)
class ImageInfo:
    """An image ready to run: the reference asked for and the engine's id."""

    ref: str
    id: str
    source: str
    """How it got there: `local`, `pulled` or `built`."""
    commit: str | None = None
    """For a built image: the full SHA of the commit the clone checked out (None: not known)."""


@dataclass(frozen=True)
class BuildSpec:
    """A git source to clone and build into `tag`."""

    git_url: str
    branch: str
    tag: str
    dockerfile: str = "Dockerfile"
    context: str = "."
    allow_local: bool = False
    """Whether `git_url` may be a local path or `file://` URL (tests)."""
    clone_timeout: float = 120.0
    build_timeout: float = 900.0
    registry_auth: RegistryCredentials | None = None
    """The agent's credentials for the registry its Dockerfile's FROM images come from (no other is sent)."""
    commit: str | None = None
    """Build this commit (a full SHA) instead of the branch's head: a release built before, built again."""


@dataclass(frozen=True)
class LogLine:
    """One line of a replica's output."""

    timestamp: datetime | None
    replica: int
    stream: str
    """`stdout` or `stderr`."""
    line: str


@dataclass(frozen=True)
class Stats:
    """A one-shot resource sample of one container.

    One-shot samples carry no previous reading, so CPU use is given as cumulative counters: the
    percentage over an interval is `(cpu_total_ns delta) / (system_cpu_ns delta) * online_cpus * 100`
    between two samples (`cpu_percent_since`).
    """

    memory_bytes: int
    memory_limit_bytes: int
    cpu_total_ns: int
    system_cpu_ns: int
    online_cpus: int
    sampled_at: datetime

    def cpu_percent_since(self, previous: Stats | None) -> float | None:
        """CPU use between `previous` and this sample, in percent of one core; None without a usable pair."""
        if previous is None:
            return None
        cpu_delta = self.cpu_total_ns - previous.cpu_total_ns
        system_delta = self.system_cpu_ns - previous.system_cpu_ns
        if cpu_delta < 0 or system_delta <= 0:
            return None
        return round(cpu_delta / system_delta * max(self.online_cpus, 1) * 100.0, 2)


class Runner(abc.ABC):
    """A container engine backend. Methods raise `EngineUnavailable` when the engine cannot be reached."""

    name: str = "abstract"

    @abc.abstractmethod
    def ping(self) -> None:
        """Check that the engine answers.

        Raises:
            EngineUnavailable: it does not.
        """

    @abc.abstractmethod
    def network_mode(self) -> str:
        """The network mode replicas get: `host` or `bridge` (resolving `auto`)."""

    def check_networking(self) -> None:  # noqa: B027 - optional: most backends have nothing to refuse
        """Check that replicas can get the network mode configured; nothing by default.

        Raises:
            RunnerConfigError: they would get host networking where it is not allowed.
        """

    def list_networks(self) -> set[str]:
        """Deployments that have a network of their own on the engine (bridge mode); none by default."""
        return set()

    def remove_network(self, deployment_id: str) -> bool:
        """Remove the deployment's own network; False if there was none (by default: never one)."""
        return False

    @abc.abstractmethod
    def ensure_image(self, ref: str, *, auth: RegistryCredentials | None = None) -> ImageInfo:
        """Use the local image `ref` if present, else pull it (with `auth`, the agent's own credentials, if given;
        never with the credentials stored on the service's machine).

        Raises:
            ImageUnavailable: neither worked.
        """

    def local_image(self, ref: str) -> ImageInfo | None:
        """The image if the engine already has it (a quick look, never a pull); None otherwise.

        Lets the reconciler start replicas of a present image in the same pass, without a background job.
        """
        return None

    def tag_image(self, image_id: str, ref: str) -> None:
        """Make the tag `ref` name the local image `image_id` (a release's own image, run again under its tag).

        Raises:
            ImageUnavailable: the engine has no such image, or refused the tag.
        """
        raise ImageUnavailable(f"The {self.name} runner cannot tag images.")

    def remove_image(self, ref: str) -> bool:
        """Remove the tag `ref` (and the image, once nothing else names or runs it); never forced.

        Returns:
            Whether it went: False when there is no such image or a container still uses it.
        """
        return False

    @abc.abstractmethod
    def build_image(
        self, spec: BuildSpec, *, on_output: Callable[[str], None], cancel: Cancellation | None = None
    ) -> ImageInfo:
        """Clone `spec.git_url` at `spec.branch` safely and build it into `spec.tag`.

        `on_output` receives each line of clone and build output as it comes; `cancel`, set from another
        thread, stops the clone or build at once.

        Raises:
            BuildFailed: the clone or build failed or timed out.
            BuildCancelled: `cancel` was cancelled (a `BuildFailed` too).
        """

    def branch_head(self, spec: BuildSpec) -> str:
        """The commit `spec.branch` of `spec.git_url` names now, asked without cloning (a restart asks whether
        the branch moved since its release was built).

        Raises:
            BuildFailed: the repository could not be asked, or has no such branch.
        """
        raise BuildFailed(f"The {self.name} runner cannot ask a repository for its branches.")

    @abc.abstractmethod
    def start_replica(self, spec: ReplicaSpec) -> ReplicaInfo:
        """Create and start the replica's container, or adopt (and start) the one that already has its name.

        Raises:
            ImageUnavailable: the image is gone.
            ReplicaStartFailed: the engine refused the container.
        """

    def stop_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:  # noqa: B027 - optional
        """Stop (SIGTERM, then SIGKILL after `stop_timeout`) a container without removing it; a missing one
        is fine. Lets its last lines be read before `remove_replica`; by default nothing (the removal stops it).
        """

    @abc.abstractmethod
    def remove_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:
        """Stop (SIGTERM, then SIGKILL after `stop_timeout`) and remove a container; a missing one is fine."""

    @abc.abstractmethod
    def list_replicas(self) -> list[ReplicaInfo]:
        """Every container this service manages (running or not), in one engine call."""

    @abc.abstractmethod
    def exit_info(self, container: str) -> ExitInfo:
        """Exit code and OOM flag of a stopped container (an inspect; call it only for exited ones)."""

    @abc.abstractmethod
    def logs(
        self,
        container: str,
        *,
        replica: int,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """The container's output lines, oldest first; with `follow`, blocks for new lines until it stops.

        A line longer than the runner's `log_line_max_bytes` comes as several, each at most that long.

        Raises:
            ContainerGone: the engine has no such container (it was removed).
        """

    @abc.abstractmethod
    def stats(self, container: str) -> Stats:
        """A one-shot CPU/memory sample (no two-second wait)."""

    def engine_version(self) -> str | None:
        """The engine's version (`docker version`'s server version); None when the backend has none.

        Raises:
            EngineUnavailable: the engine did not answer.
        """
        return None

    def describe(self) -> dict[str, object]:
        """Extra facts about the engine for operators (e.g. the Swarm node state); empty by default.

        Not shown on `/health/ready`, which anyone may call: the registry and the cluster's shape stay off it.
        """
        return {}

    def watch_exits(self, on_exit: Callable[[], None], stop: threading.Event, *, retry: float) -> None:  # noqa: B027
        """Call `on_exit` whenever a replica's container ends (exit, crash, kill or stop), until `stop` is set.

        Blocks; run on a thread of its own. It only says *that* something ended (the reconciler's next pass
        looks at what): a backend without engine events returns at once, and its exits are seen by the
        passes alone. An engine that does not answer is tried again every `retry` seconds.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class ServiceRunner(Runner):
    """A backend whose engine keeps replicas alive itself (Swarm): one service per deployment.

    The reconciler applies a spec when the database wants another replica count or generation and reads
    the services' tasks; it never starts, restarts or removes their replicas one by one.
    """

    @abc.abstractmethod
    def apply_service(self, spec: ServiceSpec) -> ServiceInfo:
        """Create the deployment's service, or update it to `spec` (scale, or a rolling update).

        Raises:
            ImageUnavailable: the image is gone.
            ReplicaStartFailed: the engine refused the service.
        """

    @abc.abstractmethod
    def remove_service(self, deployment_id: str, *, stop_timeout: float = 10.0) -> bool:
        """Remove the deployment's service and wait (bounded) until its containers are gone; False if none."""

    @abc.abstractmethod
    def list_services(self) -> list[ServiceInfo]:
        """Every service this runner manages, with its tasks, in a few engine calls."""
