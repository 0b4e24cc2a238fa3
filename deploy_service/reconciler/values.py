"""The planning step's values: what it reads (`Desired` with its `Slot`s, `Observed`, `Rules`) and what it
returns (`Plan`: actions to take, in order). Frozen dataclasses, no behaviour beyond small derived facts;
`plan.py` decides, `executor.py` carries the actions out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from deploy_service.models import AgentKind, DeploymentStatus, InstanceStatus, RestartPolicy, is_ready
from deploy_service.runner.base import ReplicaInfo

# -- inputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """What the database recorded of one replica slot (an `Instance` row)."""

    index: int
    generation: int
    status: str = InstanceStatus.PENDING
    container_id: str | None = None
    healthy: bool | None = None
    recent_restarts: int = 0
    next_restart_at: datetime | None = None
    started_at: datetime | None = None

    @property
    def ready(self) -> bool:
        return is_ready(self.status, self.container_id, self.healthy)


@dataclass(frozen=True)
class Desired:
    """What the database wants of one deployment, and what it recorded of its slots."""

    deployment_id: str
    status: str
    wants_running: bool
    """`desired_state` is running (the user did not stop it)."""
    generation: int
    replicas: int
    image_ready: bool
    progress_started_at: datetime | None = None
    slots: tuple[Slot, ...] = ()
    image_error: str | None = None
    """Why the image could not be prepared (pulled or built); None while it is being prepared or ready."""
    kind: str = AgentKind.SERVICE
    restart_policy: str = RestartPolicy.ALWAYS
    timeout_seconds: float | None = None
    """A job's longest run, counted from `progress_started_at` (its deploy or restart)."""

    @property
    def runs(self) -> bool:
        """Meant to have replicas on the engine now."""
        return self.wants_running and self.status not in ENDED_OR_STOPPED

    @property
    def is_job(self) -> bool:
        return self.kind == AgentKind.JOB


ENDED_OR_STOPPED = frozenset({DeploymentStatus.FAILED, DeploymentStatus.SUCCEEDED, DeploymentStatus.STOPPED})


@dataclass(frozen=True)
class ServiceState:
    """An engine-managed service as the engine reports it (Swarm)."""

    generation: int
    replicas: int
    update_state: str = ""
    update_message: str = ""
    previous_generation: int | None = None
    """The generation the service ran before its last update (None: never updated)."""


@dataclass(frozen=True)
class Observed:
    """What the engine runs for one deployment."""

    replicas: tuple[ReplicaInfo, ...] = ()
    """Containers (or, for services, the task that stands for each replica now)."""
    exits: tuple[ReplicaInfo, ...] = ()
    """Engine-managed only: replicas that ended on their own since the driver last reported."""
    service: ServiceState | None = None


@dataclass(frozen=True)
class Rules:
    """The settings the planner needs, and the runner's trait."""

    engine_keeps_replicas: bool
    tick: float
    resync: float
    progress_deadline: float
    backoff_base: float
    backoff_max: float
    restart_budget: int
    stable_seconds: float
    max_replicas: int | None = None
    auto_rollback: bool = False
    """A failed rolling update whose previous generation still serves goes back to it (containers only)."""
    max_surge: int = 1
    """Replicas of a rolling update started at once, each beside the old one it replaces (`ROLLOUT_MAX_SURGE`)."""


# -- actions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindDown:
    """Remove everything the deployment has on the engine; slots `stopped`; `stopped` if the user asked."""


@dataclass(frozen=True)
class PrepareImage:
    """Get the image ready (local, pull or build); nothing else happens until it is."""


@dataclass(frozen=True)
class AddSlot:
    index: int


@dataclass(frozen=True)
class DropSlot:
    """A slot past the desired count; `event`: record `replica_removed` (when no container removal does)."""

    index: int
    container_id: str | None = None
    event: bool = False


RemovalReason = Literal["scaled_down", "duplicate", "replaced", "restart"]


@dataclass(frozen=True)
class RemoveReplica:
    """Stop and remove one container: past the desired count, a duplicate, replaced, or before a restart."""

    replica: ReplicaInfo
    reason: RemovalReason


@dataclass(frozen=True)
class StartReplica:
    """Start (or adopt by name and start) the replica of slot `index` at the current generation."""

    index: int
    missing: str | None = None
    """The container the slot recorded running, gone from the engine: recorded as `container_missing`."""


@dataclass(frozen=True)
class NoteExit:
    """Count an exit of slot `index`; `fails`: it spent the restart budget (fail, then wind down)."""

    index: int
    replica: ReplicaInfo
    attempt: int
    fails: bool
    restart_in: float
    """Seconds until the replica restarts (by us, or by the engine)."""
    by_engine: bool = False
    rolls_back: bool = False
    """It spent the budget, and a `RollBack` follows instead of a failure."""
    never: bool = False
    """It fails because the restart policy is `never`, not because the budget is spent."""


@dataclass(frozen=True)
class ReplicaSucceeded:
    """A job's replica of slot `index` exited 0: it is done, and never restarted."""

    index: int
    replica: ReplicaInfo


@dataclass(frozen=True)
class ObserveRunning:
    """Slot `index` runs `replica`; `event`: how it came to (adopted, started, restarted, replaced) if new."""

    index: int
    replica: ReplicaInfo
    event: str | None = None
    reset_restarts: bool = False
    """It stayed up the stable period: its restart count for backoff starts again."""


@dataclass(frozen=True)
class MarkSlot:
    """Engine-managed: the replica's current task is not running (`exited` or `pending`)."""

    index: int
    status: InstanceStatus


@dataclass(frozen=True)
class ApplySpec:
    """Engine-managed: create the service, scale it, or roll it to the current generation."""

    change: Literal["create", "scale", "update"]
    replicas: int
    generation: int
    from_replicas: int | None = None
    back: bool = False
    """An update to an older generation than the service runs: the automatic rollback's way back, which is not
    watched (`ServiceSpec.watched`): a failure on it is the restart budget's, not a reason to stop half way."""


@dataclass(frozen=True)
class Transition:
    status: DeploymentStatus
    reason: str
    error: str | None = None
    event: str | None = None
    """An event recorded (with `reason` as its message) just before the transition (`job_timed_out`...)."""


@dataclass(frozen=True)
class RollBack:
    """The rolling update failed while the previous generation still serves: go back to it.

    Its replicas stay; the newer ones are removed by the next pass (they are then past the generation);
    the previous release stays active and the new one fails with `error`.
    """

    generation: int
    reason: str
    error: str


@dataclass(frozen=True)
class RolloutComplete:
    """A ready deployment whose rollout finished: the deadline stops counting."""


Action = (
    WindDown
    | PrepareImage
    | AddSlot
    | DropSlot
    | RemoveReplica
    | StartReplica
    | NoteExit
    | ReplicaSucceeded
    | ObserveRunning
    | MarkSlot
    | ApplySpec
    | Transition
    | RollBack
    | RolloutComplete
)


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    wake_in: float
    """Seconds until the planner wants to look again."""
    rolling: bool = False
    """A rollout replaces replicas (the deployment is not `ready` until it ends)."""
    settled: bool = False
    """No health checks nor status this pass after the actions (wound down, failed, waiting on the image,
    or a service just created, whose tasks the next pass sees)."""
    fallback: int | None = None
    """A rolling update: the newest older generation that still has a running replica (None: nothing serves)."""

    def of(self, kind: type) -> list[Action]:
        return [action for action in self.actions if isinstance(action, kind)]
