"""The planning step: what to do for one deployment, decided from values alone.

`plan_replicas(desired, observed, rules, now)` looks at what the database wants (`Desired`, with the
replica slots it recorded) and what the engine runs (`Observed`: this deployment's replicas, in the
runner's one value type `ReplicaInfo`) and returns a `Plan`: the actions to take, in order, whether a
rollout is under way, and when it wants to look again. `plan_status(...)` then derives the status from the
slots as they are after those actions (and the health checks), and applies the progress deadline.

No database, engine, clock or Flask here: `executor.py` turns the actions into writes and engine calls
(through a driver per runner, `drivers.py`), so every rule below is written once for both runners and
tested as a table (tests/unit/test_plan.py). The two runners differ in one trait, `Rules.engine_keeps_replicas`:

- containers on one engine (the reconciler keeps replicas alive): start missing replicas, count exits
  and restart them after an exponential backoff, replace replicas of an older generation one at a time,
  start-first (the new replica runs beside the old until it is ready: up to `Rules.max_surge` at once,
  `ROLLOUT_MAX_SURGE`, so never more than desired + max_surge, and no ready replica is removed before its
  replacement is ready), and remove replicas past the desired count.
- engine-managed services (Swarm restarts and rolls replicas itself): apply the spec when the replica
  count or generation differs, count the exits the engine reports, and never fight it.

Automatic rollback (`Rules.auto_rollback`): a rolling update fails (containers: a new replica spends the
restart budget, or the progress deadline passes; both runners: its image cannot be pulled or built) while
replicas of an older generation still run: instead of failing, the deployment goes back to the newest such
generation (`RollBack`; `Plan.fallback` names it for `plan_status`). On Swarm an update pauses when a new
task fails within its watch (the service's update `FailureAction` is `pause`: Swarm's own rollback would
start the old spec's tasks on the old tasks' ports, which those still hold while they stop); a paused
update, new tasks that spend the budget, or a missed deadline all go back to the spec the service ran before
the update (`ServiceState.previous_generation`), applied again next pass on ports of its own; the slots the
update had not reached yet still serve until then. (A service whose update the engine rolled back itself,
as one made before this rule was, maps onto the same `RollBack` to the generation it runs again.) With
nothing serving (a first deploy, a start from stopped or failed) it fails as before.

Jobs (`Desired.is_job`): a replica that exits 0 is done (`ReplicaSucceeded`, never restarted); one that
exits non-zero is restarted within the restart budget like a service's; when every replica is done the
deployment `succeeded` and winds down; past `timeout_seconds` (from the run's deploy or restart) it fails and
winds down. A job is not health-checked and never `ready`: `running` once its replicas started. The restart
policy `never` (jobs and services alike) makes the first exit that would be restarted fail the deployment.

Rules shared by both: wind-down (not meant to run: remove everything), image preparation, replica slots,
the restart budget (an exit past it fails the deployment), and the status rules and progress deadline,
counted from the rollout's start or from the end of the last engine outage, whichever is later.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Literal

from deploy_service.models import DeploymentStatus, InstanceStatus, RestartPolicy, is_running
from deploy_service.reconciler.timing import restart_delay
from deploy_service.reconciler.values import (
    Action,
    AddSlot,
    ApplySpec,
    Desired,
    DropSlot,
    MarkSlot,
    NoteExit,
    Observed,
    ObserveRunning,
    Plan,
    PrepareImage,
    RemovalReason,
    RemoveReplica,
    ReplicaSucceeded,
    RollBack,
    RolloutComplete,
    Rules,
    ServiceState,
    Slot,
    StartReplica,
    Transition,
    WindDown,
)
from deploy_service.runner.base import ReplicaInfo

__all__ = [
    "Action",
    "AddSlot",
    "ApplySpec",
    "deadline_start",
    "Desired",
    "DropSlot",
    "MarkSlot",
    "NoteExit",
    "Observed",
    "ObserveRunning",
    "Plan",
    "plan_replicas",
    "plan_status",
    "PrepareImage",
    "RemovalReason",
    "RemoveReplica",
    "ReplicaSucceeded",
    "RollBack",
    "RolloutComplete",
    "Rules",
    "ServiceState",
    "Slot",
    "StartReplica",
    "Transition",
    "WindDown",
]


# -- planning ---------------------------------------------------------------------------------------------


def plan_replicas(desired: Desired, observed: Observed, rules: Rules, now: datetime) -> Plan:
    """The actions that bring one deployment's replicas to what the database wants."""
    if not desired.runs:
        return Plan((WindDown(),), rules.resync, settled=True)
    deadline = _job_deadline(desired)
    if deadline is not None:
        if now >= deadline:
            seconds = f"{desired.timeout_seconds:g}"
            fail = Transition(
                DeploymentStatus.FAILED,
                f"The job ran past its timeout of {seconds}s: its containers are stopped.",
                error=f"The job did not finish within its timeout of {seconds}s.",
                event="job_timed_out",
            )
            return Plan((fail, WindDown()), rules.resync, settled=True)
        plan = _plan_replicas(desired, observed, rules, now)
        return replace(plan, wake_in=min(plan.wake_in, max(_seconds_until(deadline, now), 0.01)))
    return _plan_replicas(desired, observed, rules, now)


def _job_deadline(desired: Desired) -> datetime | None:
    """When a job's run times out (None: not a job, or no timeout)."""
    if not desired.is_job or desired.timeout_seconds is None or desired.progress_started_at is None:
        return None
    return desired.progress_started_at + timedelta(seconds=desired.timeout_seconds)


def _plan_replicas(desired: Desired, observed: Observed, rules: Rules, now: datetime) -> Plan:
    if not desired.image_ready:
        if desired.image_error is not None:
            return _image_failed(desired, observed, rules)
        return Plan((PrepareImage(),), rules.tick, settled=True)
    if rules.max_replicas is not None and desired.replicas > rules.max_replicas:
        limit = rules.max_replicas
        fail = Transition(
            DeploymentStatus.FAILED,
            f"The runner runs at most {limit} replicas per deployment.",
            error=f"{desired.replicas} replicas wanted; the runner runs at most {limit} per deployment.",
        )
        return Plan((fail, WindDown()), rules.resync, settled=True)
    slots = {slot.index: slot for slot in desired.slots}
    actions: list[Action] = []
    for index in range(desired.replicas):
        if index not in slots:
            actions.append(AddSlot(index))
            slots[index] = Slot(index=index, generation=desired.generation)
    mine = Observed(
        replicas=tuple(r for r in observed.replicas if r.deployment_id == desired.deployment_id),
        exits=tuple(r for r in observed.exits if r.deployment_id == desired.deployment_id),
        service=observed.service,
    )
    if rules.engine_keeps_replicas:
        return _plan_service(desired, mine, rules, now, slots, actions)
    return _plan_containers(desired, mine, rules, now, slots, actions)


def _image_failed(desired: Desired, observed: Observed, rules: Rules) -> Plan:
    """The image of the rollout could not be pulled or built: back to the generation that still serves (a
    rolling update, both runners), else fail and wind down."""
    error = str(desired.image_error)
    serving = [
        replica.generation
        for replica in observed.replicas
        if replica.deployment_id == desired.deployment_id
        and replica.running
        and replica.generation < desired.generation
    ]
    if serving and rules.auto_rollback:
        fallback = max(serving)
        back = RollBack(
            fallback, f"The update's image could not be prepared: rolled back to generation {fallback}.", error
        )
        return Plan((back,), rules.tick, settled=True, fallback=fallback)
    return Plan((Transition(DeploymentStatus.FAILED, error, error=error), WindDown()), rules.resync, settled=True)


def _plan_containers(
    desired: Desired, observed: Observed, rules: Rules, now: datetime, slots: dict[int, Slot], actions: list[Action]
) -> Plan:
    count, generation = desired.replicas, desired.generation
    current: dict[int, ReplicaInfo] = {}
    older: dict[int, ReplicaInfo] = {}
    for replica in observed.replicas:
        if replica.index >= count:
            actions.append(RemoveReplica(replica, "scaled_down"))
            continue
        keep = current if replica.generation == generation else older if replica.generation < generation else None
        if keep is None:
            actions.append(RemoveReplica(replica, "duplicate"))
            continue
        kept = keep.get(replica.index)
        if kept is None:
            keep[replica.index] = replica
        elif _keep_rank(replica, slots.get(replica.index)) > _keep_rank(kept, slots.get(replica.index)):
            keep[replica.index] = replica
            actions.append(RemoveReplica(kept, "duplicate"))
        else:
            actions.append(RemoveReplica(replica, "duplicate"))
    for index in sorted(i for i in slots if i >= count):
        actions.append(DropSlot(index, slots.pop(index).container_id))

    # Start-first: an old replica whose replacement is ready goes; one whose replacement is not stays.
    in_flight: set[int] = set()
    for index in sorted(set(current) & set(older)):
        if _runs_ready(slots[index], current[index]):
            actions.append(RemoveReplica(older.pop(index), "replaced"))
        else:
            in_flight.add(index)
    replacing = bool(in_flight)
    waiting = {index: replica for index, replica in older.items() if index not in current}
    serving = [replica.generation for replica in older.values() if replica.running]
    fallback = max(serving) if serving and rules.auto_rollback else None

    wake = rules.resync
    starts: list[StartReplica] = []
    done: set[int] = set()
    """A job's slots whose replica of this generation exited 0."""
    for index in range(count):
        slot, found = slots[index], current.get(index)
        if found is None:
            if index in waiting:
                continue
            if _succeeded(desired, slot):
                done.add(index)
                continue
            recorded_running = (
                slot.container_id is not None
                and slot.generation == generation
                and slot.status == InstanceStatus.RUNNING
            )
            starts.append(StartReplica(index, missing=slot.container_id if recorded_running else None))
        elif found.state == "created":
            # Created but never started (the engine or this service went away between the two calls):
            # starting it again adopts the container by its name.
            starts.append(StartReplica(index))
        elif found.exited and desired.is_job and found.exit_code == 0:
            done.add(index)
            if not (_succeeded(desired, slot) and slot.container_id == found.container_id):
                actions.append(ReplicaSucceeded(index, found))
        elif found.exited:
            if slot.next_restart_at is None or slot.container_id != found.container_id:
                exit_action = _exit(slot, found, rules, by_engine=False, never=_never(desired))
                if exit_action.fails and fallback is not None:
                    actions.append(replace(exit_action, rolls_back=True))
                    attempts = exit_action.attempt - 1
                    back = RollBack(
                        fallback,
                        f"Replica {index} of the update kept crashing: rolled back to generation {fallback}.",
                        error=f"Replica {index} kept crashing ({attempts} restarts): restart budget of "
                        f"{rules.restart_budget} spent.",
                    )
                    return Plan((*actions, back), rules.tick, settled=True, fallback=fallback)
                actions.append(exit_action)
                if exit_action.fails:
                    actions.append(WindDown())
                    return Plan(tuple(actions), rules.resync, settled=True)
                wake = min(wake, max(exit_action.restart_in, 0.01))
            elif now >= slot.next_restart_at:
                actions.append(RemoveReplica(found, "restart"))
                starts.append(StartReplica(index))
            else:
                wake = min(wake, max(_seconds_until(slot.next_restart_at, now), 0.01))
        else:
            event = "container_adopted" if slot.container_id != found.container_id else None
            actions.append(ObserveRunning(index, found, event, reset_restarts=_stable(slot, rules, now, event)))

    if desired.is_job and len(done) == count:
        return Plan((*actions, *_job_succeeded(count)), rules.resync, settled=True)
    if desired.is_job:
        wake = min(wake, rules.tick)  # a run under way: its end is looked for every tick

    # Up to `max_surge` replacements at once (each beside the old replica it replaces), once every other
    # replica of the generation is ready.
    settled_others = all(
        _runs_ready(slots[index], replica) for index, replica in current.items() if index not in in_flight
    )
    room = rules.max_surge - len(in_flight)
    if waiting and not starts and room > 0 and settled_others:
        for index in sorted(waiting)[:room]:
            starts.append(StartReplica(index))
        replacing = True
    actions.extend(starts)
    if starts:
        wake = rules.tick
    return Plan(tuple(actions), wake, rolling=bool(older) or replacing, fallback=fallback)


def _plan_service(
    desired: Desired, observed: Observed, rules: Rules, now: datetime, slots: dict[int, Slot], actions: list[Action]
) -> Plan:
    count, generation, service = desired.replicas, desired.generation, observed.service
    for index in sorted(i for i in slots if i >= count):
        actions.append(DropSlot(index, slots.pop(index).container_id, event=True))
    if service is None or service.generation != generation or service.replicas != count:
        rolled_back = service is not None and service.generation != generation
        if service is not None and rolled_back and service.update_state.startswith("rollback"):
            why = f"Rolling update failed: {service.update_message or service.update_state}"
            if rules.auto_rollback and service.generation < generation:
                # Swarm's own update rollback (FailureAction) put the previous spec back: its tasks serve.
                back = RollBack(
                    service.generation,
                    f"The rolling update to generation {generation} failed; the engine rolled it back to "
                    f"generation {service.generation}.",
                    error=why,
                )
                return Plan((*actions, back), rules.tick, settled=True, fallback=service.generation)
            fail = Transition(
                DeploymentStatus.FAILED,
                f"The rolling update to generation {generation} failed and the engine rolled it back.",
                error=why,
            )
            return Plan((*actions, fail, WindDown()), rules.resync, settled=True)
        if service is None:
            actions.append(ApplySpec("create", count, generation))
            return Plan(tuple(actions), rules.tick, settled=True)
        change: Literal["scale", "update"] = "scale" if service.generation == generation else "update"
        going_back = change == "update" and service.generation > generation
        actions.append(ApplySpec(change, count, generation, from_replicas=service.replicas, back=going_back))

    # During a rollout (its progress is being watched), the spec the service ran before the update is
    # the one to go back to: Swarm keeps it as the previous spec.
    fallback = None
    if (
        rules.auto_rollback
        and desired.progress_started_at is not None
        and service is not None
        and service.previous_generation is not None
        and service.previous_generation < generation
    ):
        fallback = service.previous_generation
    if service is not None and service.generation == generation and service.update_state == "paused":
        why = f"Rolling update failed: {service.update_message or service.update_state}"
        if fallback is not None:
            back = RollBack(
                fallback,
                f"The rolling update to generation {generation} failed: rolled back to generation {fallback}.",
                error=why,
            )
            return Plan((*actions, back), rules.tick, settled=True, fallback=fallback)
        fail = Transition(DeploymentStatus.FAILED, f"The rolling update to generation {generation} failed.", error=why)
        return Plan((*actions, fail, WindDown()), rules.resync, settled=True)
    wake = rules.resync
    attempts = {index: slot.recent_restarts for index, slot in slots.items()}
    for ended in observed.exits:
        if ended.index not in slots or ended.generation != generation:
            continue
        if desired.is_job and ended.exit_code == 0:
            continue  # a job's replica done (its task `complete`, never restarted): seen as the slot's task below
        exit_action = _exit(
            slots[ended.index], ended, rules, by_engine=True, attempt=attempts[ended.index] + 1, never=_never(desired)
        )
        attempts[ended.index] = exit_action.attempt
        if exit_action.fails and fallback is not None:
            # The engine's start-first update stopped the old tasks once the new ones ran, so nothing of
            # the old generation may serve now: its spec is applied again (`ApplySpec` next pass).
            back = RollBack(
                fallback,
                f"Replica {ended.index} of the update kept crashing: rolled back to generation {fallback}.",
                error=f"Replica {ended.index} kept crashing ({exit_action.attempt - 1} restarts): restart budget "
                f"of {rules.restart_budget} spent.",
            )
            return Plan(
                (*actions, replace(exit_action, rolls_back=True), back), rules.tick, settled=True, fallback=fallback
            )
        actions.append(exit_action)
        if exit_action.fails:
            actions.append(WindDown())
            return Plan(tuple(actions), rules.resync, settled=True)
        wake = rules.tick
    tasks = {replica.index: replica for replica in observed.replicas}
    done: set[int] = set()
    for index, slot in sorted(slots.items()):
        task = tasks.get(index)
        if task is None:
            if _succeeded(desired, slot):
                done.add(index)  # a complete task Swarm no longer lists
            continue
        if desired.is_job and task.exited and task.exit_code == 0 and task.generation == generation:
            done.add(index)
            if not (_succeeded(desired, slot) and slot.container_id == task.container_id):
                actions.append(ReplicaSucceeded(index, task))
        elif task.running:
            event = None
            if slot.container_id != task.container_id:
                if slot.container_id is None:
                    event = "container_started"
                elif task.generation > slot.generation:
                    event = "replica_replaced"
                else:
                    event = "container_restarted"
            actions.append(ObserveRunning(index, task, event, reset_restarts=_stable(slot, rules, now, event)))
        elif task.exited:
            actions.append(MarkSlot(index, InstanceStatus.EXITED))
        else:
            actions.append(MarkSlot(index, InstanceStatus.PENDING))
            wake = rules.tick
    if desired.is_job and len(done) == count:
        return Plan((*actions, *_job_succeeded(count)), rules.resync, settled=True)
    if desired.is_job:
        wake = min(wake, rules.tick)
    rolling = service is not None and (service.update_state == "updating" or service.generation != generation)
    return Plan(tuple(actions), wake, rolling=rolling, fallback=fallback)


def _succeeded(desired: Desired, slot: Slot) -> bool:
    """The slot's replica of the current generation is a job's, done (exited 0)."""
    return desired.is_job and slot.status == InstanceStatus.SUCCEEDED and slot.generation == desired.generation


def _never(desired: Desired) -> bool:
    return desired.restart_policy == RestartPolicy.NEVER


def _job_succeeded(count: int) -> tuple[Action, ...]:
    """Every replica of a job exited 0: `succeeded`, and its containers removed (their lines kept)."""
    what = "Its replica exited 0" if count == 1 else f"All {count} replicas exited 0"
    return (
        Transition(DeploymentStatus.SUCCEEDED, f"{what}: the job succeeded.", event="job_succeeded"),
        WindDown(),
    )


def _exit(
    slot: Slot,
    replica: ReplicaInfo,
    rules: Rules,
    *,
    by_engine: bool,
    attempt: int | None = None,
    never: bool = False,
) -> NoteExit:
    """Count an exit. `never`: the restart policy is `never`, so this exit fails the deployment at once."""
    attempt = slot.recent_restarts + 1 if attempt is None else attempt
    fails = never or attempt > rules.restart_budget
    if by_engine:
        delay = rules.backoff_base
    else:
        delay = restart_delay(attempt, base=rules.backoff_base, maximum=rules.backoff_max)
    return NoteExit(
        slot.index, replica, attempt=attempt, fails=fails, restart_in=delay, by_engine=by_engine, never=never
    )


def _keep_rank(replica: ReplicaInfo, slot: Slot | None) -> tuple[bool, bool, bool, int]:
    """Of two containers of one slot and generation class, the one to keep ranks higher: a running one,
    then one the slot knows ready, then one that is not the slot's unready replacement (a replacement
    of a generation since superseded gives way to the replica that serves), then the newer generation."""
    own = slot is not None and slot.container_id == replica.container_id
    ready = own and slot is not None and slot.ready
    return replica.running, ready, ready or not own, replica.generation


def _runs_ready(slot: Slot, replica: ReplicaInfo) -> bool:
    return replica.running and slot.container_id == replica.container_id and slot.ready


def _stable(slot: Slot, rules: Rules, now: datetime, event: str | None) -> bool:
    """A replica seen running again resets its backoff count once it has stayed up the stable period."""
    if event is not None or not slot.recent_restarts or slot.started_at is None:
        return False
    return (now - slot.started_at).total_seconds() >= rules.stable_seconds


# -- status ----------------------------------------------------------------------------------------------


def plan_status(
    desired: Desired,
    rules: Rules,
    now: datetime,
    *,
    rolling: bool,
    engine_back_at: datetime | None = None,
    fallback: int | None = None,
) -> Plan:
    """The status transitions the slots call for, and the progress deadline.

    Args:
        desired: the deployment with its slots as they are after this pass's actions and health checks.
        rolling: a rollout is replacing replicas.
        engine_back_at: the last pass the engine did not answer; the deadline never counts an outage.
        fallback: the older generation that still serves (`Plan.fallback`): a missed deadline goes back to it.
    """
    wanted = [slot for slot in desired.slots if slot.index < desired.replicas]
    if desired.is_job:
        return _job_status(desired, wanted, rules)
    all_running = len(wanted) == desired.replicas and all(is_running(s.status, s.container_id) for s in wanted)
    all_ready = all_running and all(slot.ready for slot in wanted) and not rolling
    status = desired.status
    actions: list[Action] = []
    if all_ready:
        if status != DeploymentStatus.READY:
            if status == DeploymentStatus.DEPLOYING:
                actions.append(Transition(DeploymentStatus.RUNNING, "Every replica is running."))
            actions.append(Transition(DeploymentStatus.READY, "Every replica is ready."))
        elif desired.progress_started_at is not None:
            actions.append(RolloutComplete())
        return Plan(tuple(actions), rules.resync)
    if all_running and status == DeploymentStatus.DEPLOYING:
        actions.append(Transition(DeploymentStatus.RUNNING, "Every replica is running."))
    elif status == DeploymentStatus.READY:
        reason = "A rolling restart is replacing replicas." if rolling else "Not every replica is ready."
        actions.append(Transition(DeploymentStatus.RUNNING, reason))
    started = deadline_start(desired.progress_started_at, engine_back_at)
    if started is None:
        return Plan(tuple(actions), rules.resync)
    deadline = started + timedelta(seconds=rules.progress_deadline)
    if now > deadline:
        seconds = f"{rules.progress_deadline:g}"
        if fallback is not None and rules.auto_rollback:
            back = RollBack(
                fallback,
                f"Not ready within the progress deadline of {seconds}s: rolled back to generation {fallback}.",
                error=f"The rollout did not become ready within {seconds}s.",
            )
            return Plan((*actions, back), rules.tick, settled=True)
        actions.append(
            Transition(
                DeploymentStatus.FAILED,
                f"Not ready within the progress deadline of {seconds}s.",
                error=f"The deployment did not become ready within {seconds}s.",
            )
        )
        actions.append(WindDown())
        return Plan(tuple(actions), rules.resync, settled=True)
    return Plan(tuple(actions), max(_seconds_until(deadline, now), rules.tick))


def _job_status(desired: Desired, wanted: list[Slot], rules: Rules) -> Plan:
    """A job is `running` once every replica has started (or is done); it is never health-checked nor `ready`,
    and its time limit is its own `timeout_seconds` (`plan_replicas`), not the progress deadline."""
    started = len(wanted) == desired.replicas and all(
        is_running(s.status, s.container_id) or _succeeded(desired, s) for s in wanted
    )
    if started and desired.status == DeploymentStatus.DEPLOYING:
        return Plan((Transition(DeploymentStatus.RUNNING, "Every replica of the job has started."),), rules.resync)
    return Plan((), rules.resync)


def deadline_start(progress_started_at: datetime | None, engine_back_at: datetime | None) -> datetime | None:
    """When the rollout's progress deadline started counting: never before the engine was back."""
    if progress_started_at is None or engine_back_at is None:
        return progress_started_at
    return max(progress_started_at, engine_back_at)


def _seconds_until(moment: datetime, now: datetime) -> float:
    return max((moment - now).total_seconds(), 0.0)
