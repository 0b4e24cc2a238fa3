"""The planning step, without a database or an engine: table tests, and properties of its invariants.

The properties run the planner against a small simulated engine (containers that start running, become
healthy or crash as hypothesis decides) and check, at every step: never more containers than desired +
max_surge,
never a removal that leaves fewer ready containers than desired while a replacement is not ready, and never
an action on another deployment's replica. The executor that carries the actions out for real is tested
through the API (tests/api) and on the real engine (tests/integration).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_service.models import DeploymentStatus as S
from deploy_service.models import InstanceStatus as I
from deploy_service.reconciler import plan as p
from deploy_service.runner.base import ReplicaInfo

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RULES = p.Rules(
    engine_keeps_replicas=False,
    tick=0.01,
    resync=30.0,
    progress_deadline=60.0,
    backoff_base=1.0,
    backoff_max=8.0,
    restart_budget=2,
    stable_seconds=60.0,
)
SERVICE_RULES = replace(RULES, engine_keeps_replicas=True, max_replicas=99)
_ids = itertools.count(1)


def replica(
    index: int, generation: int = 1, state: str = "running", deployment: str = "d1", **kw: object
) -> ReplicaInfo:
    cid = str(kw.pop("container_id", f"c{next(_ids)}"))
    return ReplicaInfo(
        container_id=cid,
        name=f"ds-{deployment}-r{index}-g{generation}",
        deployment_id=deployment,
        agent_id="a1",
        index=index,
        generation=generation,
        state=state,
        port=30000 + index,
        **kw,  # type: ignore[arg-type]
    )


def slot_for(r: ReplicaInfo, *, healthy: bool | None = True, **kw: object) -> p.Slot:
    values: dict[str, object] = {
        "index": r.index,
        "generation": r.generation,
        "status": I.RUNNING,
        "container_id": r.container_id,
        "healthy": healthy,
        "started_at": NOW - timedelta(minutes=5),
        **kw,
    }
    return p.Slot(**values)  # type: ignore[arg-type]


def desired(*slots: p.Slot, replicas: int | None = None, generation: int = 1, **kw: object) -> p.Desired:
    values: dict[str, object] = {
        "deployment_id": "d1",
        "status": S.READY,
        "wants_running": True,
        "generation": generation,
        "replicas": len(slots) if replicas is None else replicas,
        "image_ready": True,
        "slots": slots,
        **kw,
    }
    return p.Desired(**values)  # type: ignore[arg-type]


def kinds(plan: p.Plan) -> list[str]:
    return [type(action).__name__ for action in plan.actions]


# -- tables -------------------------------------------------------------------------------------------


def test_not_meant_to_run_winds_down_and_nothing_else() -> None:
    for d in (desired(wants_running=False), desired(status=S.FAILED), desired(status=S.STOPPED)):
        plan = p.plan_replicas(d, p.Observed(replicas=(replica(0),)), RULES, NOW)
        assert kinds(plan) == ["WindDown"] and plan.settled


def test_an_image_not_ready_is_prepared_first() -> None:
    plan = p.plan_replicas(desired(image_ready=False, replicas=2), p.Observed(), RULES, NOW)
    assert kinds(plan) == ["PrepareImage"] and plan.wake_in == RULES.tick


def test_a_new_deployment_gets_its_slots_and_starts() -> None:
    plan = p.plan_replicas(desired(replicas=2, status=S.DEPLOYING), p.Observed(), RULES, NOW)
    assert plan.actions == (p.AddSlot(0), p.AddSlot(1), p.StartReplica(0), p.StartReplica(1))
    assert plan.wake_in == RULES.tick


def test_steady_state_only_observes() -> None:
    r0, r1 = replica(0), replica(1)
    plan = p.plan_replicas(desired(slot_for(r0), slot_for(r1)), p.Observed(replicas=(r0, r1)), RULES, NOW)
    assert plan.actions == (p.ObserveRunning(0, r0), p.ObserveRunning(1, r1))
    assert plan.wake_in == RULES.resync and not plan.rolling


def test_a_container_that_disappeared_is_recreated_and_recorded() -> None:
    r0 = replica(0)
    plan = p.plan_replicas(desired(slot_for(r0)), p.Observed(), RULES, NOW)
    assert plan.actions == (p.StartReplica(0, missing=r0.container_id),)


def test_a_created_container_is_started_again() -> None:
    r0 = replica(0, state="created")
    plan = p.plan_replicas(desired(slot_for(r0, healthy=None)), p.Observed(replicas=(r0,)), RULES, NOW)
    assert plan.actions == (p.StartReplica(0),)


def test_a_running_container_the_slot_does_not_know_is_adopted() -> None:
    r0 = replica(0)
    plan = p.plan_replicas(desired(replicas=1), p.Observed(replicas=(r0,)), RULES, NOW)
    assert plan.actions == (p.AddSlot(0), p.ObserveRunning(0, r0, "container_adopted"))


@pytest.mark.parametrize(("recent", "delay"), [(0, 1.0), (1, 2.0)])
def test_an_exit_is_counted_once_and_restarts_after_backoff(recent: int, delay: float) -> None:
    r0 = replica(0, state="exited", exit_code=3)
    d = desired(slot_for(r0, recent_restarts=recent))
    plan = p.plan_replicas(d, p.Observed(replicas=(r0,)), RULES, NOW)
    assert plan.actions == (p.NoteExit(0, r0, attempt=recent + 1, fails=False, restart_in=delay),)
    assert plan.wake_in == delay
    waiting = desired(slot_for(r0, recent_restarts=recent + 1, next_restart_at=NOW + timedelta(seconds=delay)))
    later = p.plan_replicas(waiting, p.Observed(replicas=(r0,)), RULES, NOW)
    assert later.actions == () and later.wake_in == delay
    due = p.plan_replicas(waiting, p.Observed(replicas=(r0,)), RULES, NOW + timedelta(seconds=delay))
    assert due.actions == (p.RemoveReplica(r0, "restart"), p.StartReplica(0))


def test_an_exit_past_the_restart_budget_fails_and_winds_down() -> None:
    r0 = replica(0, state="exited")
    plan = p.plan_replicas(desired(slot_for(r0, recent_restarts=2)), p.Observed(replicas=(r0,)), RULES, NOW)
    assert kinds(plan) == ["NoteExit", "WindDown"] and plan.settled
    assert plan.of(p.NoteExit)[0] == p.NoteExit(0, r0, attempt=3, fails=True, restart_in=4.0)


def test_the_backoff_count_resets_after_the_stable_period() -> None:
    r0 = replica(0)
    stable = slot_for(r0, recent_restarts=2, started_at=NOW - timedelta(seconds=61))
    fresh = slot_for(r0, recent_restarts=2, started_at=NOW - timedelta(seconds=59))
    assert p.plan_replicas(desired(stable), p.Observed(replicas=(r0,)), RULES, NOW).actions == (
        p.ObserveRunning(0, r0, reset_restarts=True),
    )
    assert p.plan_replicas(desired(fresh), p.Observed(replicas=(r0,)), RULES, NOW).actions == (p.ObserveRunning(0, r0),)


def test_scale_down_removes_past_the_count() -> None:
    r0, r1, r2 = replica(0), replica(1), replica(2)
    d = desired(slot_for(r0), slot_for(r1), slot_for(r2), replicas=1)
    plan = p.plan_replicas(d, p.Observed(replicas=(r0, r1, r2)), RULES, NOW)
    assert plan.actions == (
        p.RemoveReplica(r1, "scaled_down"),
        p.RemoveReplica(r2, "scaled_down"),
        p.DropSlot(1, r1.container_id),
        p.DropSlot(2, r2.container_id),
        p.ObserveRunning(0, r0),
    )


def test_a_rolling_restart_is_start_first_one_replica_at_a_time() -> None:
    old0, old1 = replica(0, 1), replica(1, 1)
    d = desired(slot_for(old0), slot_for(old1), generation=2)
    first = p.plan_replicas(d, p.Observed(replicas=(old0, old1)), RULES, NOW)
    assert first.actions == (p.StartReplica(0),) and first.rolling, "the old replicas keep serving"

    new0 = replica(0, 2)
    starting = desired(slot_for(new0, healthy=None), slot_for(old1), generation=2)
    waiting = p.plan_replicas(starting, p.Observed(replicas=(old0, new0, old1)), RULES, NOW)
    assert waiting.of(p.RemoveReplica) == [] and waiting.of(p.StartReplica) == [], "nothing more until it is ready"

    ready = desired(slot_for(new0), slot_for(old1), generation=2)
    swap = p.plan_replicas(ready, p.Observed(replicas=(old0, new0, old1)), RULES, NOW)
    assert swap.of(p.RemoveReplica) == [p.RemoveReplica(old0, "replaced")]
    assert swap.of(p.StartReplica) == [p.StartReplica(1)], "the next one starts as the replaced one goes"


def test_a_rolling_restart_with_a_surge_of_two_replaces_two_replicas_at_a_time() -> None:
    olds = [replica(i, 1) for i in range(3)]
    rules = replace(RULES, max_surge=2)
    d = desired(*(slot_for(r) for r in olds), generation=2)
    first = p.plan_replicas(d, p.Observed(replicas=tuple(olds)), rules, NOW)
    assert first.actions == (p.StartReplica(0), p.StartReplica(1)) and first.rolling

    new0, new1 = replica(0, 2), replica(1, 2)
    half = desired(slot_for(new0), slot_for(new1, healthy=None), slot_for(olds[2]), generation=2)
    observed = p.Observed(replicas=(*olds, new0, new1))
    step = p.plan_replicas(half, observed, rules, NOW)
    assert step.of(p.RemoveReplica) == [p.RemoveReplica(olds[0], "replaced")]  # its replacement is ready
    assert step.of(p.StartReplica) == [p.StartReplica(2)], "a place in the surge is free: the last one starts"


def test_duplicates_of_a_replica_are_removed_keeping_the_one_that_serves() -> None:
    a, b = replica(0), replica(0)
    plan = p.plan_replicas(desired(slot_for(a)), p.Observed(replicas=(a, b)), RULES, NOW)
    assert p.RemoveReplica(b, "duplicate") in plan.actions
    exited_old, running_old = replica(0, 1, state="exited"), replica(0, 2)
    later = desired(slot_for(running_old), generation=3)
    rolled = p.plan_replicas(later, p.Observed(replicas=(exited_old, running_old)), RULES, NOW)
    assert rolled.of(p.RemoveReplica) == [p.RemoveReplica(exited_old, "duplicate")]


def test_replicas_of_another_deployment_are_never_acted_on() -> None:
    foreign = replica(0, deployment="other")
    plan = p.plan_replicas(desired(replicas=1, status=S.DEPLOYING), p.Observed(replicas=(foreign,)), RULES, NOW)
    assert plan.actions == (p.AddSlot(0), p.StartReplica(0))


# -- services -----------------------------------------------------------------------------------------


def test_a_missing_service_is_created_and_the_pass_ends_there() -> None:
    plan = p.plan_replicas(desired(replicas=2, status=S.DEPLOYING), p.Observed(), SERVICE_RULES, NOW)
    assert plan.actions[-1] == p.ApplySpec("create", 2, 1) and plan.settled


@pytest.mark.parametrize(
    ("service", "change"),
    [(p.ServiceState(generation=1, replicas=1), "scale"), (p.ServiceState(generation=0, replicas=2), "update")],
)
def test_a_service_that_differs_is_applied_once(service: p.ServiceState, change: str) -> None:
    t0 = replica(0)
    d = desired(slot_for(t0), replicas=2)
    plan = p.plan_replicas(d, p.Observed(replicas=(t0,), service=service), SERVICE_RULES, NOW)
    assert plan.of(p.ApplySpec) == [p.ApplySpec(change, 2, 1, from_replicas=service.replicas)]  # type: ignore[arg-type]


def test_a_service_the_engine_rolled_back_fails_the_deployment() -> None:
    service = p.ServiceState(generation=1, replicas=1, update_state="rollback_completed", update_message="bad")
    plan = p.plan_replicas(desired(replicas=1, generation=2), p.Observed(service=service), SERVICE_RULES, NOW)
    assert kinds(plan) == ["AddSlot", "Transition", "WindDown"]
    assert plan.of(p.Transition)[0].error == "Rolling update failed: bad"


def test_a_service_the_engine_rolled_back_rolls_the_deployment_back_with_auto_rollback() -> None:
    service = p.ServiceState(generation=1, replicas=1, update_state="rollback_completed", update_message="bad")
    rules = replace(SERVICE_RULES, auto_rollback=True)
    t0 = replica(0, 1)
    d = desired(slot_for(t0), replicas=1, generation=2)
    plan = p.plan_replicas(d, p.Observed(replicas=(t0,), service=service), rules, NOW)
    assert kinds(plan) == ["RollBack"] and plan.fallback == 1
    [back] = plan.of(p.RollBack)
    assert back.generation == 1 and back.error == "Rolling update failed: bad"  # type: ignore[attr-defined]
    # Once back on generation 1, the state Swarm keeps ("rollback_completed") is no failure: a scale applies.
    scaled = p.plan_replicas(
        replace(d, generation=1, replicas=2), p.Observed(replicas=(t0,), service=service), rules, NOW
    )
    assert [a.change for a in scaled.of(p.ApplySpec)] == ["scale"]  # type: ignore[attr-defined]


def test_exits_the_engine_reports_count_against_the_budget_and_the_engine_restarts() -> None:
    t0 = replica(0)
    ended = [replica(0, state="exited", task_id=f"t{n}") for n in range(3)]
    service = p.ServiceState(generation=1, replicas=1)
    d = desired(slot_for(t0, recent_restarts=0))
    one = p.plan_replicas(d, p.Observed(replicas=(t0,), exits=tuple(ended[:1]), service=service), SERVICE_RULES, NOW)
    assert one.of(p.NoteExit) == [p.NoteExit(0, ended[0], attempt=1, fails=False, restart_in=1.0, by_engine=True)]
    three = p.plan_replicas(d, p.Observed(replicas=(t0,), exits=tuple(ended), service=service), SERVICE_RULES, NOW)
    assert [a.attempt for a in three.of(p.NoteExit)] == [1, 2, 3]  # type: ignore[attr-defined]
    assert kinds(three)[-1] == "WindDown"


def test_a_services_update_that_spends_the_budget_goes_back_to_the_spec_it_ran_before() -> None:
    t0 = replica(0, 2)
    ended = [replica(0, 2, state="exited", task_id=f"t{n}") for n in range(3)]
    rules = replace(SERVICE_RULES, auto_rollback=True)
    updated = p.ServiceState(generation=2, replicas=1, update_state="completed", previous_generation=1)
    rolling_out = desired(slot_for(t0, recent_restarts=0), generation=2, progress_started_at=NOW)
    observed = p.Observed(replicas=(t0,), exits=tuple(ended), service=updated)
    plan = p.plan_replicas(rolling_out, observed, rules, NOW)
    assert kinds(plan)[-2:] == ["NoteExit", "RollBack"] and plan.fallback == 1 and plan.settled
    [back] = plan.of(p.RollBack)
    assert back.generation == 1 and "restart budget of 2 spent" in back.error  # type: ignore[attr-defined]
    assert plan.of(p.NoteExit)[-1].rolls_back  # type: ignore[attr-defined]
    # Back on generation 1, the service (still on 2) gets the old spec applied again.
    again = p.plan_replicas(
        replace(rolling_out, generation=1, progress_started_at=None), replace(observed, exits=()), rules, NOW
    )
    assert [(a.change, a.generation) for a in again.of(p.ApplySpec)] == [("update", 1)]  # type: ignore[attr-defined]
    # A deadline missed during the update goes back to it too.
    late = p.plan_status(
        replace(rolling_out, slots=(slot_for(t0, healthy=False),)),
        rules,
        NOW + timedelta(seconds=rules.progress_deadline + 1),
        rolling=True,
        fallback=plan.fallback,
    )
    assert [a.generation for a in late.of(p.RollBack)] == [1]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("service", "progress", "auto_rollback"),
    [
        (p.ServiceState(generation=2, replicas=1, previous_generation=1), None, True),  # the rollout completed
        (p.ServiceState(generation=2, replicas=1, previous_generation=2), NOW, True),  # last change was a scale
        (p.ServiceState(generation=2, replicas=1), NOW, True),  # never updated
        (p.ServiceState(generation=2, replicas=1, previous_generation=1), NOW, False),
    ],
)
def test_a_service_that_spends_its_budget_outside_an_update_fails(
    service: p.ServiceState, progress: datetime | None, auto_rollback: bool
) -> None:
    t0 = replica(0, 2)
    ended = [replica(0, 2, state="exited", task_id=f"t{n}") for n in range(3)]
    d = desired(slot_for(t0, recent_restarts=0), generation=2, progress_started_at=progress)
    rules = replace(SERVICE_RULES, auto_rollback=auto_rollback)
    plan = p.plan_replicas(d, p.Observed(replicas=(t0,), exits=tuple(ended), service=service), rules, NOW)
    assert kinds(plan)[-1] == "WindDown" and not plan.of(p.RollBack)


def test_more_replicas_than_the_runner_runs_fail() -> None:
    plan = p.plan_replicas(desired(replicas=100, status=S.DEPLOYING), p.Observed(), SERVICE_RULES, NOW)
    assert kinds(plan) == ["Transition", "WindDown"]


# -- status -------------------------------------------------------------------------------------------


def test_status_goes_deploying_running_ready() -> None:
    r0 = replica(0)
    running = desired(slot_for(r0, healthy=None), status=S.DEPLOYING, progress_started_at=NOW)
    assert p.plan_status(running, RULES, NOW, rolling=False).actions == (
        p.Transition(S.RUNNING, "Every replica is running."),
    )
    ready = desired(slot_for(r0), status=S.DEPLOYING, progress_started_at=NOW)
    assert [a.status for a in p.plan_status(ready, RULES, NOW, rolling=False).of(p.Transition)] == [  # type: ignore[attr-defined]
        S.RUNNING,
        S.READY,
    ]
    done = desired(slot_for(r0), status=S.READY, progress_started_at=NOW)
    assert p.plan_status(done, RULES, NOW, rolling=False).actions == (p.RolloutComplete(),)
    rolling = p.plan_status(desired(slot_for(r0), status=S.READY), RULES, NOW, rolling=True)
    assert rolling.actions == (p.Transition(S.RUNNING, "A rolling restart is replacing replicas."),)


def test_the_progress_deadline_never_counts_an_engine_outage() -> None:
    r0 = replica(0)
    started = NOW - timedelta(seconds=61)
    late = desired(slot_for(r0, healthy=None), status=S.RUNNING, progress_started_at=started)
    assert kinds(p.plan_status(late, RULES, NOW, rolling=False)) == ["Transition", "WindDown"]
    back = NOW - timedelta(seconds=10)
    spared = p.plan_status(late, RULES, NOW, rolling=False, engine_back_at=back)
    assert spared.actions == () and spared.wake_in == pytest.approx(50.0)


AUTO = replace(RULES, auto_rollback=True)


def _crashed_rollout(*, old: bool = True) -> tuple[p.Desired, p.Observed, ReplicaInfo]:
    """Generation 2's first replica spent its budget; generation 1's replicas still run (if `old`)."""
    old0, old1, new0 = replica(0, 1), replica(1, 1), replica(0, 2, state="exited")
    slots = (slot_for(new0, healthy=False, recent_restarts=2), slot_for(old1))
    running = (old0, new0, old1) if old else (new0,)
    return desired(*slots, generation=2, status=S.RUNNING), p.Observed(replicas=running), new0


@pytest.mark.parametrize(
    ("rules", "old", "expected"),
    [
        (AUTO, True, ["NoteExit", "RollBack"]),  # the previous generation serves: back to it
        (RULES, True, ["NoteExit", "WindDown"]),  # AUTO_ROLLBACK=false: fails as before
        (AUTO, False, ["NoteExit", "WindDown"]),  # nothing serves (a first deploy, a start): fails
    ],
)
def test_a_new_replica_that_spends_its_budget_rolls_back_only_while_the_previous_generation_serves(
    rules: p.Rules, old: bool, expected: list[str]
) -> None:
    d, observed, new0 = _crashed_rollout(old=old)
    d = d if old else replace(d, slots=d.slots[:1], replicas=1)
    plan = p.plan_replicas(d, observed, rules, NOW)
    assert kinds(plan) == expected and plan.settled
    [exit_action] = plan.of(p.NoteExit)
    assert exit_action.fails and exit_action.rolls_back == (expected[-1] == "RollBack")  # type: ignore[attr-defined]
    if expected[-1] == "RollBack":
        [back] = plan.of(p.RollBack)
        assert back.generation == 1 and "restart budget" in back.error  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("rules", "old", "expected"),
    [
        (AUTO, True, ["RollBack"]),  # a rolling update whose image cannot be pulled or built: back
        (RULES, True, ["Transition", "WindDown"]),  # AUTO_ROLLBACK=false: fails as before
        (AUTO, False, ["Transition", "WindDown"]),  # nothing serves (a first deploy, a start): fails
        (replace(AUTO, engine_keeps_replicas=True), True, ["RollBack"]),  # Swarm: the old service stays
    ],
)
def test_an_image_that_cannot_be_prepared_rolls_back_only_while_the_previous_generation_serves(
    rules: p.Rules, old: bool, expected: list[str]
) -> None:
    old0 = replica(0, 1)
    d = desired(slot_for(old0), generation=2, image_ready=False, image_error="pull access denied")
    plan = p.plan_replicas(d, p.Observed(replicas=(old0,) if old else ()), rules, NOW)
    assert kinds(plan) == expected and plan.settled
    if expected == ["RollBack"]:
        [back] = plan.of(p.RollBack)
        assert back.generation == 1 and back.error == "pull access denied"  # type: ignore[attr-defined]
        assert plan.fallback == 1
    else:
        [fail] = plan.of(p.Transition)
        assert fail.status == S.FAILED and fail.error == "pull access denied"  # type: ignore[attr-defined]
    still = replace(d, image_error=None)  # being prepared: nothing is decided yet
    assert kinds(p.plan_replicas(still, p.Observed(replicas=(old0,)), rules, NOW)) == ["PrepareImage"]


def test_a_rolling_update_knows_the_generation_that_still_serves() -> None:
    old0, old1, new0 = replica(0, 1), replica(1, 1), replica(0, 2)
    d = desired(slot_for(new0, healthy=None), slot_for(old1), generation=2)
    assert p.plan_replicas(d, p.Observed(replicas=(old0, new0, old1)), AUTO, NOW).fallback == 1
    assert p.plan_replicas(d, p.Observed(replicas=(old0, new0, old1)), RULES, NOW).fallback is None
    stopped = replace(old0, state="exited"), replace(old1, state="exited")
    assert p.plan_replicas(d, p.Observed(replicas=(*stopped, new0)), AUTO, NOW).fallback is None
    fresh = desired(slot_for(new0, healthy=None), replicas=1)
    assert p.plan_replicas(fresh, p.Observed(replicas=(new0,)), AUTO, NOW).fallback is None


@pytest.mark.parametrize(
    ("rules", "fallback", "expected"),
    [
        (AUTO, 1, ["RollBack"]),
        (AUTO, None, ["Transition", "WindDown"]),
        (RULES, 1, ["Transition", "WindDown"]),
    ],
)
def test_a_rollout_past_its_deadline_rolls_back_while_the_previous_generation_serves(
    rules: p.Rules, fallback: int | None, expected: list[str]
) -> None:
    r0 = replica(0, 2)
    late = desired(
        slot_for(r0, healthy=None), status=S.RUNNING, generation=2, progress_started_at=NOW - timedelta(seconds=61)
    )
    plan = p.plan_status(late, rules, NOW, rolling=True, fallback=fallback)
    assert kinds(plan) == expected and plan.settled
    if fallback is not None and rules.auto_rollback:
        assert plan.of(p.RollBack) == [
            p.RollBack(
                1,
                "Not ready within the progress deadline of 60s: rolled back to generation 1.",
                error="The rollout did not become ready within 60s.",
            )
        ]


# -- properties ---------------------------------------------------------------------------------------


@dataclass
class World:
    """One deployment on a simulated engine, with the executor's bookkeeping reduced to its essentials."""

    replicas: int
    generation: int = 1
    containers: dict[str, ReplicaInfo] = field(default_factory=dict)
    healthy: set[str] = field(default_factory=set)
    slots: dict[int, p.Slot] = field(default_factory=dict)
    now: datetime = NOW

    def desired(self) -> p.Desired:
        return desired(*self.slots.values(), replicas=self.replicas, generation=self.generation, status=S.RUNNING)

    def observed(self) -> p.Observed:
        foreign = replica(0, deployment="other", container_id="foreign")
        return p.Observed(replicas=(*self.containers.values(), foreign))

    def ready(self) -> int:
        """Replicas (slots) served by at least one ready container: during a replacement, two serve one."""
        return len(
            {
                c.index
                for c in self.containers.values()
                if c.running and c.container_id in self.healthy and c.index < self.replicas
            }
        )

    def apply(self, plan: p.Plan) -> None:
        for action in plan.actions:
            if isinstance(action, p.AddSlot):
                self.slots[action.index] = p.Slot(index=action.index, generation=self.generation)
            elif isinstance(action, p.DropSlot):
                del self.slots[action.index]
            elif isinstance(action, p.RemoveReplica):
                assert action.replica.deployment_id == "d1", "an action on another deployment's replica"
                self.containers.pop(action.replica.container_id, None)
            elif isinstance(action, p.StartReplica):
                started = replica(action.index, self.generation)
                self.containers[started.container_id] = started
                self.slots[action.index] = p.Slot(
                    index=action.index,
                    generation=self.generation,
                    status=I.RUNNING,
                    container_id=started.container_id,
                    started_at=self.now,
                    recent_restarts=self.slots[action.index].recent_restarts,
                )
            elif isinstance(action, p.NoteExit):
                self.slots[action.index] = replace(
                    self.slots[action.index],
                    status=I.EXITED,
                    container_id=action.replica.container_id,
                    healthy=False,
                    recent_restarts=action.attempt,
                    next_restart_at=self.now + timedelta(seconds=action.restart_in),
                )
            elif isinstance(action, p.ObserveRunning):
                self.slots[action.index] = replace(
                    self.slots[action.index],
                    status=I.RUNNING,
                    container_id=action.replica.container_id,
                    next_restart_at=None,
                )
            elif isinstance(action, p.WindDown):
                self.containers.clear()

    def check_health(self) -> None:
        self.slots = {
            i: replace(s, healthy=s.container_id in self.healthy) if s.status == I.RUNNING else s
            for i, s in self.slots.items()
        }


EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("heal"), st.integers(0, 5)),
        st.tuples(st.just("crash"), st.integers(0, 5)),
        st.tuples(st.just("rollout"), st.just(0)),
        st.tuples(st.just("scale"), st.integers(1, 4)),
        st.tuples(st.just("wait"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(start=st.integers(1, 4), surge=st.integers(1, 3), events=EVENTS)
def test_rollouts_never_surge_past_max_surge_nor_drop_a_ready_replica_early(
    start: int, surge: int, events: list[tuple[str, int]]
) -> None:
    world = World(replicas=start)
    budget_rules = replace(RULES, restart_budget=1000, max_surge=surge)
    for kind, value in events:
        scaled_down = crashed = False
        running = sorted((c for c in world.containers.values() if c.running), key=lambda c: c.container_id)
        if kind == "heal" and running:
            world.healthy.add(running[value % len(running)].container_id)
        elif kind == "crash" and running:
            victim = running[value % len(running)]
            world.containers[victim.container_id] = replace(victim, state="exited")
            world.healthy.discard(victim.container_id)
            crashed = True
        elif kind == "rollout":
            world.generation += 1
        elif kind == "scale":
            scaled_down = value < world.replicas
            world.replicas = value
        world.now += timedelta(seconds=10)
        before = world.ready()
        plan = p.plan_replicas(world.desired(), world.observed(), budget_rules, world.now)
        world.apply(plan)
        world.check_health()
        assert len(world.containers) <= world.replicas + surge, "more replicas over the desired count than max_surge"
        if not (scaled_down or crashed):
            assert world.ready() >= min(before, world.replicas), "a ready replica was removed before its replacement"
