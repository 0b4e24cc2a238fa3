"""The planning step's rules for jobs and restart policies, as tables (values in, actions out).

The helpers are tests/unit/test_plan.py's; the executor carrying these actions out is tested through the
API (tests/api/test_jobs.py) and on the real engine (tests/integration/test_jobs_engine.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from deploy_service.models import DeploymentStatus as S
from deploy_service.models import InstanceStatus as I
from deploy_service.reconciler import plan as p
from tests.unit.test_plan import NOW, RULES, SERVICE_RULES, desired, kinds, replica, slot_for


def job(*slots: p.Slot, **kw: object) -> p.Desired:
    values: dict[str, object] = {"kind": "job", "restart_policy": "on-failure", "status": S.RUNNING, **kw}
    return desired(*slots, **values)


def test_a_job_replica_that_exits_0_is_done_and_never_restarted() -> None:
    r0, r1 = replica(0, state="exited", exit_code=0), replica(1)
    plan = p.plan_replicas(job(slot_for(r0), slot_for(r1)), p.Observed(replicas=(r0, r1)), RULES, NOW)
    assert plan.actions == (p.ReplicaSucceeded(0, r0), p.ObserveRunning(1, r1))
    # Seen again, it is known done: nothing to do for it, and it is not started again once removed.
    done = slot_for(r0, status=I.SUCCEEDED)
    assert p.plan_replicas(job(done, slot_for(r1)), p.Observed(replicas=(r0, r1)), RULES, NOW).actions == (
        p.ObserveRunning(1, r1),
    )
    assert p.plan_replicas(job(done, slot_for(r1)), p.Observed(replicas=(r1,)), RULES, NOW).actions == (
        p.ObserveRunning(1, r1),
    )


def test_every_replica_of_a_job_done_is_success_and_a_wind_down() -> None:
    r0, r1 = replica(0, state="exited", exit_code=0), replica(1, state="exited", exit_code=0)
    plan = p.plan_replicas(
        job(slot_for(r0, status=I.SUCCEEDED), slot_for(r1)), p.Observed(replicas=(r0, r1)), RULES, NOW
    )
    assert kinds(plan) == ["ReplicaSucceeded", "Transition", "WindDown"] and plan.settled
    [succeeded] = plan.of(p.Transition)
    assert succeeded.status == S.SUCCEEDED and succeeded.event == "job_succeeded"
    # An ended job is not meant to run: it winds down and stays so.
    assert kinds(p.plan_replicas(job(status=S.SUCCEEDED), p.Observed(), RULES, NOW)) == ["WindDown"]


def test_a_service_replica_that_exits_0_is_a_crash_like_any_other() -> None:
    r0 = replica(0, state="exited", exit_code=0)
    plan = p.plan_replicas(desired(slot_for(r0)), p.Observed(replicas=(r0,)), RULES, NOW)
    assert plan.actions == (p.NoteExit(0, r0, attempt=1, fails=False, restart_in=1.0),)


@pytest.mark.parametrize("kind", ["job", "service"])
def test_restart_policy_never_fails_at_the_first_exit_it_would_restart(kind: str) -> None:
    r0 = replica(0, state="exited", exit_code=4)
    d = desired(slot_for(r0), kind=kind, restart_policy="never", status=S.RUNNING)
    plan = p.plan_replicas(d, p.Observed(replicas=(r0,)), RULES, NOW)
    assert kinds(plan) == ["NoteExit", "WindDown"] and plan.settled
    assert plan.of(p.NoteExit)[0] == p.NoteExit(0, r0, attempt=1, fails=True, restart_in=1.0, never=True)


def test_a_job_non_zero_exit_is_restarted_within_the_budget() -> None:
    r0 = replica(0, state="exited", exit_code=9)
    within = p.plan_replicas(job(slot_for(r0)), p.Observed(replicas=(r0,)), RULES, NOW)
    assert within.actions == (p.NoteExit(0, r0, attempt=1, fails=False, restart_in=1.0),)
    spent = p.plan_replicas(job(slot_for(r0, recent_restarts=2)), p.Observed(replicas=(r0,)), RULES, NOW)
    assert kinds(spent) == ["NoteExit", "WindDown"] and spent.of(p.NoteExit)[0].fails


def test_a_job_past_its_timeout_fails_and_winds_down_and_wakes_for_it_before() -> None:
    r0 = replica(0)
    started = NOW - timedelta(seconds=10)
    late = job(slot_for(r0), timeout_seconds=10.0, progress_started_at=started)
    plan = p.plan_replicas(late, p.Observed(replicas=(r0,)), RULES, NOW)
    assert kinds(plan) == ["Transition", "WindDown"] and plan.settled
    [failed] = plan.of(p.Transition)
    assert failed.status == S.FAILED and failed.event == "job_timed_out" and "10s" in str(failed.error)
    early = job(slot_for(r0), timeout_seconds=12.5, progress_started_at=started)
    slow = replace(RULES, tick=5.0)
    plan = p.plan_replicas(early, p.Observed(replicas=(r0,)), slow, NOW)
    assert plan.actions == (p.ObserveRunning(0, r0),) and plan.wake_in == pytest.approx(2.5)
    # Without a nearer timeout, a run under way is looked at every tick (its end is what is waited for).
    assert p.plan_replicas(job(slot_for(r0)), p.Observed(replicas=(r0,)), slow, NOW).wake_in == 5.0
    # A service's timeout is no rule (the API refuses one); a job without one runs as long as it takes.
    assert p.plan_replicas(
        desired(slot_for(r0), timeout_seconds=1.0, progress_started_at=started), p.Observed(replicas=(r0,)), RULES, NOW
    ).actions == (p.ObserveRunning(0, r0),)


def test_a_job_is_running_once_started_never_ready_and_has_no_progress_deadline() -> None:
    r0, r1 = replica(0), replica(1, state="exited", exit_code=0)
    slots = (slot_for(r0, healthy=None), slot_for(r1, status=I.SUCCEEDED))
    long_ago = NOW - timedelta(hours=5)
    status = p.plan_status(job(*slots, status=S.DEPLOYING, progress_started_at=long_ago), RULES, NOW, rolling=False)
    assert [(a.status if isinstance(a, p.Transition) else None) for a in status.actions] == [S.RUNNING]
    assert p.plan_status(job(*slots, progress_started_at=long_ago), RULES, NOW, rolling=False).actions == ()


def test_on_swarm_a_job_task_complete_is_done_and_its_exit_is_not_counted() -> None:
    r0 = replica(0, state="exited", exit_code=0, task_id="t1", task_state="complete")
    service = p.ServiceState(generation=1, replicas=1)
    plan = p.plan_replicas(
        job(slot_for(r0)), p.Observed(replicas=(r0,), exits=(r0,), service=service), SERVICE_RULES, NOW
    )
    assert kinds(plan) == ["ReplicaSucceeded", "Transition", "WindDown"]
    crashed = replica(0, state="exited", exit_code=3, task_id="t2", task_state="failed")
    plan = p.plan_replicas(
        job(slot_for(crashed), restart_policy="never"),
        p.Observed(replicas=(crashed,), exits=(crashed,), service=service),
        SERVICE_RULES,
        NOW,
    )
    assert kinds(plan) == ["NoteExit", "WindDown"] and plan.of(p.NoteExit)[0].never
