"""The reconciler with a runner whose engine keeps replicas alive (Swarm), on an in-memory Swarm.

What the reconciler decides, pass by pass: one apply per change (create, scale, rolling update on a new
port block), tasks observed as instances, exits recorded once and counted against the budget, a rolled
back update fails the deployment, stop removes the service. The real Swarm runs the same flows in
tests/integration (test_deployments_engine.py with `swarm`, test_swarm_runner.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.reconciler import Reconciler
from deploy_service.reconciler.drivers import ServiceDriver
from deploy_service.runner import ExitInfo, RunnerError, ServiceInfo, ServiceRunner, ServiceSpec, TaskInfo
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, converge, deploy, new_agent


class FakeSwarm(FakeRunner, ServiceRunner):
    """Services in memory; tests play Swarm by changing their tasks."""

    name = "fake-swarm"

    def __init__(self) -> None:
        super().__init__()
        self.services: dict[str, ServiceInfo] = {}
        self.specs: dict[str, ServiceSpec] = {}
        self.applied: list[ServiceSpec] = []
        self.removed: list[str] = []
        self._task_ids = itertools.count(1)
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)

    def task(self, spec: ServiceSpec, index: int, state: str = "running", **fields: object) -> TaskInfo:
        number = next(self._task_ids)
        self._clock += timedelta(seconds=1)
        values: dict[str, object] = {
            "task_id": f"t{number}",
            "index": index,
            "generation": spec.generation,
            "state": "running" if state == "running" else "exited",
            "task_state": state,
            "desired_state": "running",
            "container_id": f"c{number}",
            "port": spec.port(index),
            "created_at": self._clock,
            "updated_at": self._clock,
            **fields,
        }
        return TaskInfo(**values)  # type: ignore[arg-type]

    def apply_service(self, spec: ServiceSpec) -> ServiceInfo:
        self.applied.append(spec)
        old = self.services.get(spec.deployment_id)
        tasks = [t for t in (old.tasks if old else ()) if t.index < spec.replicas]
        if old is None or old.generation != spec.generation:
            tasks = [replace(t, desired_state="shutdown", state="exited", task_state="shutdown") for t in tasks]
            tasks += [self.task(spec, index) for index in range(spec.replicas)]
        else:
            tasks += [self.task(spec, index) for index in range(old.replicas, spec.replicas)]
        blocks = {spec.port_block} | ({old.port_block} if old and old.port_block else set())
        info = ServiceInfo(
            service_id=f"s-{spec.deployment_id}",
            deployment_id=spec.deployment_id,
            agent_id=spec.agent_id,
            generation=spec.generation,
            replicas=spec.replicas,
            port_blocks=frozenset(blocks),
            port_block=spec.port_block,
            update_state="completed" if old else "",
            tasks=tuple(tasks),
            previous_generation=old.generation if old else None,
        )
        self.services[spec.deployment_id] = info
        self.specs[spec.deployment_id] = spec
        return info

    def remove_service(self, deployment_id: str, *, stop_timeout: float = 10.0) -> bool:
        self.removed.append(deployment_id)
        return self.services.pop(deployment_id, None) is not None

    def list_services(self) -> list[ServiceInfo]:
        return list(self.services.values())

    def exit_info(self, container: str) -> ExitInfo:
        raise RunnerError("on another node")

    def fail_task(self, deployment_id: str, index: int, *, restart: bool, exit_code: int = 3) -> None:
        """The replica's running task ends on its own; Swarm starts a new one unless `restart` is False."""
        service = self.services[deployment_id]
        spec = self.specs[deployment_id]
        tasks = [
            replace(t, state="exited", task_state="failed", desired_state="shutdown", exit_code=exit_code)
            if t.index == index and t.running
            else t
            for t in service.tasks
        ]
        if restart:
            tasks.append(self.task(spec, index))
        self.services[deployment_id] = replace(service, tasks=tuple(tasks))


@pytest.fixture()
def api(client: FlaskClient, auth: AuthActions) -> Api:
    _, headers = auth.user()
    return Api(client, headers)


@pytest.fixture()
def swarm(app: Flask) -> Iterator[FakeSwarm]:
    real = app.extensions[RUNNER_KEY]
    fake = FakeSwarm()
    app.extensions[RUNNER_KEY] = fake
    yield fake
    app.extensions[RUNNER_KEY] = real


@pytest.fixture()
def reconciler(app: Flask, swarm: FakeSwarm) -> Iterator[Reconciler]:
    reconciler = Reconciler(app, runner=swarm, settings=FAST)
    assert isinstance(reconciler.executor.driver, ServiceDriver)
    yield reconciler
    reconciler.close()


def ready(app: Flask, api: Api, reconciler: Reconciler, replicas: int = 2) -> str:
    deployment_id = str(deploy(api, new_agent(app, api)["id"], replicas=replicas)["id"])
    converge(reconciler, api.status_is(deployment_id, "ready"))
    return deployment_id


def test_the_agents_run_as_user_is_in_the_service_spec(
    app: Flask, api: Api, swarm: FakeSwarm, reconciler: Reconciler
) -> None:
    deployment_id = str(deploy(api, new_agent(app, api, run_as_user="4242")["id"])["id"])
    converge(reconciler, api.status_is(deployment_id, "ready"))
    [created] = swarm.applied
    assert created.run_as_user == "4242"


def test_deploy_scale_restart_and_stop_apply_once_each(
    app: Flask, api: Api, swarm: FakeSwarm, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler)
    [created] = swarm.applied
    assert created.replicas == 2 and created.restart_attempts == FAST.restart_budget
    assert created.restart_delay == FAST.backoff_base and created.restart_window == FAST.stable_seconds
    body = api.deployment(deployment_id)
    assert sorted(i["port"] for i in body["instances"]) == [created.port(0), created.port(1)]
    for _ in range(3):
        reconciler.run_once()
    assert len(swarm.applied) == 1, "nothing changed: nothing applied"
    assert [e["event_type"] for e in api.events(deployment_id, event_type="container_started")] == [
        "container_started"
    ] * 2

    assert api.post(f"/v1/deployments/{deployment_id}/scale", {"replicas": 3}).status_code == 202
    converge(reconciler, lambda: api.deployment(deployment_id)["replicas"]["ready"] == 3)
    scaled = swarm.applied[-1]
    assert (scaled.replicas, scaled.generation, scaled.port_block) == (3, 1, created.port_block)
    assert api.events(deployment_id, event_type="service_scaled")

    assert api.post(f"/v1/deployments/{deployment_id}/restart").status_code == 202
    converge(reconciler, lambda: len(api.events(deployment_id, event_type="replica_replaced")) == 3)
    rolled = swarm.applied[-1]
    assert rolled.generation == 2 and rolled.port_block != created.port_block
    converge(reconciler, api.status_is(deployment_id, "ready"))
    assert {i["port"] for i in api.deployment(deployment_id)["instances"]} == {rolled.port(i) for i in range(3)}

    assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment_id, "stopped"))
    assert swarm.services == {} and deployment_id in swarm.removed


def test_exits_are_recorded_once_then_the_budget_fails_the_deployment(
    app: Flask, api: Api, swarm: FakeSwarm, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler, replicas=1)
    swarm.fail_task(deployment_id, 0, restart=True)
    converge(reconciler, api.status_is(deployment_id, "ready"))
    for _ in range(3):
        reconciler.run_once()
    [exited] = api.events(deployment_id, event_type="container_exited")
    assert exited["data"]["exit_code"] == 3 and exited["data"]["task_state"] == "failed"
    assert [e["event_type"] for e in api.events(deployment_id, event_type="container_restarted")] == [
        "container_restarted"
    ]
    assert api.deployment(deployment_id)["instances"][0]["restarts"] == 1

    swarm.fail_task(deployment_id, 0, restart=True)
    swarm.fail_task(deployment_id, 0, restart=False)  # Swarm's max attempts spent: no new task
    converge(reconciler, api.status_is(deployment_id, "failed"))
    body = api.deployment(deployment_id)
    assert "kept crashing" in body["error"] and "restart budget of 2 spent" in body["error"]
    assert len(api.events(deployment_id, event_type="container_exited")) == FAST.restart_budget + 1
    assert swarm.services == {}
    active = api.get(f"/v1/alerts?deployment_id={deployment_id}&status=active").get_json()["items"]
    assert "deployment_failed" in {alert["kind"] for alert in active}


def _engine_rolls_back(swarm: FakeSwarm, deployment_id: str) -> None:
    """From now on, Swarm rolls every update back: the new tasks failed, the old spec is back."""

    def roll_back(spec: ServiceSpec) -> ServiceInfo:
        swarm.applied.append(spec)
        old = swarm.services[deployment_id]
        info = replace(old, update_state="rollback_completed", update_message="update rolled back due to failure")
        swarm.services[deployment_id] = info
        return info

    swarm.apply_service = roll_back  # type: ignore[method-assign]


def test_an_update_the_engine_rolled_back_is_rolled_back_and_the_old_service_keeps_serving(
    app: Flask, api: Api, swarm: FakeSwarm, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler, replicas=1)
    agent_id = api.deployment(deployment_id)["agent_id"]
    swarm.images.add("deploy-test/http-agent:v2")
    patched = api.client.patch(
        f"/v1/agents/{agent_id}", headers=api.headers, json={"image": "deploy-test/http-agent:v2"}
    )
    assert patched.status_code == 200, patched.get_json()
    assert api.post(f"/v1/deployments/{deployment_id}/restart").get_json()["revision"] == 2
    original = swarm.specs[deployment_id]
    _engine_rolls_back(swarm, deployment_id)
    converge(reconciler, lambda: bool(api.events(deployment_id, event_type="rolled_back")))
    converge(reconciler, api.status_is(deployment_id, "ready"))

    body = api.deployment(deployment_id)
    assert body["revision"] == 1 and body["generation"] == original.generation
    statuses = [
        (r["number"], r["status"]) for r in api.get(f"/v1/deployments/{deployment_id}/releases").get_json()["items"]
    ]
    assert statuses == [(2, "failed"), (1, "active")]
    failed = api.get(f"/v1/deployments/{deployment_id}/releases/2").get_json()
    assert "update rolled back due to failure" in failed["error"]
    assert deployment_id in swarm.services  # never removed
    assert len([spec for spec in swarm.applied if spec.generation == 2]) == 1, "applied once, not fought over"
    active = api.get(f"/v1/alerts?deployment_id={deployment_id}&status=active").get_json()["items"]
    assert [alert["kind"] for alert in active] == ["rollout_failed"]


def test_an_update_whose_tasks_spend_the_budget_goes_back_to_the_old_spec_and_never_removes_the_service(
    app: Flask, api: Api, swarm: FakeSwarm, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler, replicas=1)
    agent_id = api.deployment(deployment_id)["agent_id"]
    swarm.images.add("deploy-test/crasher:latest")
    patched = api.client.patch(
        f"/v1/agents/{agent_id}",
        headers=api.headers,
        # A health check nothing answers: the crashing tasks never become ready, so the update stays under way.
        json={"image": "deploy-test/crasher:latest", "health_check": {"path": "/health", "interval_seconds": 0.5}},
    )
    assert patched.status_code == 200, patched.get_json()
    assert api.post(f"/v1/deployments/{deployment_id}/restart").get_json()["revision"] == 2
    converge(reconciler, lambda: swarm.specs[deployment_id].generation == 2)
    for _ in range(FAST.restart_budget):  # Swarm restarts the crashing task; its start-first update is done
        swarm.fail_task(deployment_id, 0, restart=True)
        reconciler.run_once()
    swarm.fail_task(deployment_id, 0, restart=True)
    converge(reconciler, lambda: bool(api.events(deployment_id, event_type="rolled_back")))
    converge(reconciler, lambda: swarm.specs[deployment_id].generation == 1)
    converge(reconciler, api.status_is(deployment_id, "ready"))

    body = api.deployment(deployment_id)
    assert body["revision"] == 1 and body["image"] == "deploy-test/http-agent:latest" and body["generation"] == 1
    assert swarm.specs[deployment_id].image != "deploy-test/crasher:latest"
    assert deployment_id not in swarm.removed
    statuses = [
        (r["number"], r["status"]) for r in api.get(f"/v1/deployments/{deployment_id}/releases").get_json()["items"]
    ]
    assert statuses == [(2, "failed"), (1, "active")]
    failed = api.get(f"/v1/deployments/{deployment_id}/releases/2").get_json()
    assert "kept crashing" in failed["error"]
    kinds = [e["event_type"] for e in api.events(deployment_id)]
    assert "rollout_failed" in kinds and "rolled_back" in kinds and "containers_removed" not in kinds
    active = api.get(f"/v1/alerts?deployment_id={deployment_id}&status=active").get_json()["items"]
    assert [alert["kind"] for alert in active] == ["rollout_failed"]


def _engine_pauses(swarm: FakeSwarm, deployment_id: str) -> None:
    """The next update's new task fails within Swarm's watch: the update pauses (its `FailureAction`), the
    slot it had not reached yet still runs the old spec's task."""
    apply = swarm.apply_service

    def pause(spec: ServiceSpec) -> ServiceInfo:
        old = swarm.services[deployment_id]
        info = apply(spec)
        if spec.generation <= old.generation:
            return info  # the rollback's own apply: it goes through
        new_zero = next(t for t in info.tasks if t.index == 0 and t.generation == spec.generation)
        kept = [t for t in old.tasks if t.index != 0 and t.running]  # not reached yet: still serving
        failed = replace(new_zero, state="exited", task_state="failed", desired_state="shutdown", exit_code=3)
        stopped = [replace(t, desired_state="shutdown", state="exited") for t in old.tasks if t.index == 0]
        paused = replace(
            info,
            tasks=(*stopped, failed, *kept),
            update_state="paused",
            update_message=f"update paused due to failure or early termination of task {failed.task_id}",
        )
        swarm.services[deployment_id] = paused
        swarm.apply_service = apply  # type: ignore[method-assign]
        return paused

    swarm.apply_service = pause  # type: ignore[method-assign]


def test_an_update_the_engine_paused_goes_back_to_the_old_spec_on_ports_of_its_own(
    app: Flask, api: Api, swarm: FakeSwarm, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler, replicas=2)
    agent_id = api.deployment(deployment_id)["agent_id"]
    swarm.images.add("deploy-test/crasher:latest")
    patched = api.client.patch(
        f"/v1/agents/{agent_id}", headers=api.headers, json={"image": "deploy-test/crasher:latest"}
    )
    assert patched.status_code == 200, patched.get_json()
    original = swarm.specs[deployment_id]
    _engine_pauses(swarm, deployment_id)
    assert api.post(f"/v1/deployments/{deployment_id}/restart").get_json()["revision"] == 2
    converge(reconciler, lambda: bool(api.events(deployment_id, event_type="rolled_back")))
    converge(reconciler, lambda: swarm.specs[deployment_id].generation == 1)
    converge(reconciler, api.status_is(deployment_id, "ready"))

    again = swarm.specs[deployment_id]
    assert again.image == original.image and again.port_block != original.port_block  # never the old tasks' ports
    # The way back is not watched: a failure on it (a task of the failed update Swarm was still restarting) must
    # not pause it half way, with no older spec left to go back to.
    assert original.watched and not again.watched
    [back] = [e for e in api.events(deployment_id, event_type="rolling_update") if e["data"]["generation"] == 1]
    assert back["message"] == "Rolling update back to generation 1 (start-first)."
    body = api.deployment(deployment_id)
    assert body["revision"] == 1 and body["generation"] == 1
    statuses = [
        (r["number"], r["status"]) for r in api.get(f"/v1/deployments/{deployment_id}/releases").get_json()["items"]
    ]
    assert statuses == [(2, "failed"), (1, "active")]
    failed = api.get(f"/v1/deployments/{deployment_id}/releases/2").get_json()
    assert "update paused due to failure" in failed["error"]
    assert deployment_id not in swarm.removed
    active = api.get(f"/v1/alerts?deployment_id={deployment_id}&status=active").get_json()["items"]
    assert [alert["kind"] for alert in active] == ["rollout_failed"]


def test_with_auto_rollback_off_an_update_the_engine_paused_fails_the_deployment(
    app: Flask, api: Api, swarm: FakeSwarm
) -> None:
    reconciler = Reconciler(app, runner=swarm, settings=replace(FAST, auto_rollback=False))
    try:
        deployment_id = ready(app, api, reconciler, replicas=2)
        _engine_pauses(swarm, deployment_id)
        assert api.post(f"/v1/deployments/{deployment_id}/restart").status_code == 202
        converge(reconciler, api.status_is(deployment_id, "failed"))
        assert "update paused due to failure" in api.deployment(deployment_id)["error"]
    finally:
        reconciler.close()


def test_with_auto_rollback_off_an_update_the_engine_rolled_back_fails_the_deployment(
    app: Flask, api: Api, swarm: FakeSwarm
) -> None:
    reconciler = Reconciler(app, runner=swarm, settings=replace(FAST, auto_rollback=False))
    try:
        deployment_id = ready(app, api, reconciler, replicas=1)
        assert api.post(f"/v1/deployments/{deployment_id}/restart").status_code == 202
        original = swarm.specs[deployment_id]
        _engine_rolls_back(swarm, deployment_id)
        converge(reconciler, api.status_is(deployment_id, "failed"))
        body = api.deployment(deployment_id)
        assert "update rolled back due to failure" in body["error"]
        assert swarm.applied[-1].generation == 2 and original.generation == 1
        assert len([spec for spec in swarm.applied if spec.generation == 2]) == 1, "applied once, not fought over"
    finally:
        reconciler.close()


def test_a_service_it_did_not_create_is_adopted_without_replaying_exits(
    app: Flask, api: Api, swarm: FakeSwarm, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler, replicas=1)
    swarm.fail_task(deployment_id, 0, restart=True)
    converge(reconciler, lambda: bool(api.events(deployment_id, event_type="container_exited")))
    second = Reconciler(app, runner=swarm, settings=FAST)
    try:
        for _ in range(3):
            second.run_once()
    finally:
        second.close()
    assert len(api.events(deployment_id, event_type="container_exited")) == 1
    assert len(swarm.applied) == 1


def test_orphaned_services_are_removed(app: Flask, api: Api, swarm: FakeSwarm, reconciler: Reconciler) -> None:
    deployment_id = ready(app, api, reconciler, replicas=1)
    orphan = replace(swarm.specs[deployment_id], deployment_id="gone")
    swarm.apply_service(orphan)
    reconciler.run_once()
    assert "gone" in swarm.removed and set(swarm.services) == {deployment_id}
