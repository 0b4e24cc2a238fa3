"""The Swarm runner against the real single-node swarm: a service's life without the reconciler.

What the deployment tests cannot see from the API: scaling keeps the running tasks, a rolling update is
start-first on a fresh port block (old and new task of a replica run side by side), task logs come
through the manager, and removal leaves no container behind.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
import requests

from deploy_service.reconciler.ports import free_block
from deploy_service.runner import LABEL_MANAGED, ServiceSpec, SwarmRunner
from deploy_service.runner.settings import RunnerSettings
from deploy_service.runner.swarm_runner import current_tasks
from tests.helpers import port_range
from tests.integration.conftest import printed_ids

HTTP_AGENT = "deploy-test/http-agent:latest"
PORT_RANGE = port_range(30000, 32699)
"""Where the tests' port blocks are probed (xdist worker 0: blocks 300-326; the Swarm driver's own `free_block`),
below the kernel's ephemeral ports (32768-)."""


@pytest.fixture()
def swarm(docker_engine: docker.DockerClient, swarm_manager: None) -> Iterator[SwarmRunner]:
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    runner = SwarmRunner(RunnerSettings(namespace=namespace, docker_timeout=20))
    yield runner
    for service in docker_engine.api.services(filters={"label": f"{LABEL_MANAGED}={namespace}"}):
        docker_engine.api.remove_service(service["ID"])
    runner.close()


@pytest.fixture()
def blocks() -> tuple[int, int]:
    """Two blocks of 100 host ports whose first three ports bind now: a service's, and its update's."""
    used: set[int] = set()
    return free_block(used, PORT_RANGE, 3), free_block(used, PORT_RANGE, 3)


def port(block: int, index: int) -> int:
    """The host port of replica `index` in a port block (as the Swarm runner assigns them)."""
    return block * 100 + index + 1


def spec(port_block: int, **changes: Any) -> ServiceSpec:
    base = ServiceSpec(
        deployment_id=f"it{uuid.uuid4().hex[:12]}",
        agent_id="agent",
        generation=1,
        image=HTTP_AGENT,
        replicas=2,
        port_block=port_block,
        restart_delay=0.2,
        restart_attempts=2,
        restart_window=60,
        stop_timeout=1,
        update_monitor=0.5,
    )
    return ServiceSpec(**{**base.__dict__, **changes})


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running(runner: SwarmRunner, count: int, generation: int) -> Callable[[], Any]:
    def check() -> Any:
        [service] = runner.list_services()
        tasks = current_tasks(service)
        ok = len(tasks) == count and all(t.running and t.generation == generation for t in tasks.values())
        return ok and tasks

    return check


def answers(port: int) -> str:
    reply = requests.post(f"http://127.0.0.1:{port}/invoke", json={"q": 1}, timeout=5)
    return str(reply.json()["replica"])


def answered(port: int) -> bool:
    """The replica on `port` answers (a task that lost the race for its port is about to exit)."""
    try:
        return answers(port) == str(port % 100 - 1)
    except requests.RequestException:
        return False


def test_scale_keeps_tasks_and_rolling_update_is_start_first(swarm: SwarmRunner, blocks: tuple[int, int]) -> None:
    old, new = blocks
    first = spec(old)
    swarm.apply_service(first)
    tasks = wait_for(running(swarm, 2, 1), what="2 running")
    assert {i: t.port for i, t in tasks.items()} == {0: port(old, 0), 1: port(old, 1)}
    assert [answers(port(old, 0)), answers(port(old, 1))] == ["0", "1"]

    swarm.apply_service(spec(**{**first.__dict__, "replicas": 3}))
    scaled = wait_for(running(swarm, 3, 1), what="3 running")
    assert scaled[0].task_id == tasks[0].task_id and scaled[1].task_id == tasks[1].task_id
    assert answers(port(old, 2)) == "2"

    swarm.apply_service(spec(**{**first.__dict__, "replicas": 3, "generation": 2, "port_block": new}))
    side_by_side = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        [service] = swarm.list_services()
        live = [t for t in service.tasks if t.running]
        side_by_side |= any(
            old.index == new.index and old.generation == 1 and new.generation == 2 for old in live for new in live
        )
        current = current_tasks(service)
        if all(t.generation == 2 and t.running for t in current.values()) and not any(t.generation == 1 for t in live):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the rolling update did not finish")
    assert side_by_side, "start-first: a new task runs beside the old one of its replica"
    assert service.port_blocks == {old, new}
    assert [answers(port(new, index)) for index in range(3)] == ["0", "1", "2"]

    [line, *_] = [line for line in swarm.task_logs(current[0].task_id, replica=0, tail=50) if "listening" in line.line]
    assert line.timestamp is not None and line.replica == 0

    assert swarm.remove_service(first.deployment_id, stop_timeout=1) is True
    assert swarm.list_services() == []
    assert swarm.list_replicas() == []
    assert swarm.remove_service(first.deployment_id) is False


def test_a_replica_that_keeps_crashing_is_restarted_by_swarm_then_given_up(
    swarm: SwarmRunner, blocks: tuple[int, int]
) -> None:
    crashing = spec(blocks[0], image="deploy-test/crasher:latest", replicas=1, env={"CRASH_DELAY": "0.1"})
    swarm.apply_service(crashing)

    def given_up() -> Any:
        [service] = swarm.list_services()
        failed = [t for t in service.tasks if t.failed]
        return len(failed) == 3 and all(t.ended for t in current_tasks(service).values()) and failed

    failed = wait_for(given_up, what="three failed tasks")
    assert {t.exit_code for t in failed} == {3}
    # The budget is spent: no fourth task. Swarm would start one `restart_delay` after the third failed;
    # five restart delays after it was seen failed, it would be listed. (A negative: a wait is its test.)
    time.sleep(5 * crashing.restart_delay)
    [service] = swarm.list_services()
    assert len(service.tasks) == 3


def test_an_update_whose_first_new_task_crashes_pauses_and_the_slot_it_had_not_reached_still_serves(
    swarm: SwarmRunner, blocks: tuple[int, int]
) -> None:
    """The update waits `update_delay` after each slot and watches it for `update_monitor`: a new task that
    crashes within the watch pauses the update (its `FailureAction`) before the next slot is touched. Swarm
    does not roll back itself (its rollback would bind the old tasks' ports while they stop): the planner
    applies the previous spec again on another block (tests/integration/test_releases_engine.py)."""
    old, new = blocks
    first = spec(old, replicas=2, update_monitor=3.0, update_delay=3.0)
    swarm.apply_service(first)
    before = wait_for(running(swarm, 2, 1), what="2 running")
    broken = {**first.__dict__, "generation": 2, "port_block": new, "image": "deploy-test/crasher:latest"}
    swarm.apply_service(spec(**{**broken, "env": {"CRASH_DELAY": "0.2"}}))

    def paused() -> Any:
        [service] = swarm.list_services()
        return service.update_state == "paused" and service

    service = wait_for(paused, timeout=60, what="the update paused")
    assert "failure" in service.update_message
    assert service.generation == 2 and service.previous_generation == 1
    untouched = [
        slot for slot, task in before.items() if any(t.task_id == task.task_id and t.running for t in service.tasks)
    ]
    # One slot was reached (Swarm picks which), the other never: no task of the update, its old task serving.
    # (The reached one may keep its old task too: Swarm stops it only once its replacement runs.)
    reached = {t.index for t in service.tasks if t.generation == 2}
    assert len(reached) == 1, f"the update stopped at its first slot: {reached}"
    assert set(untouched) >= {0, 1} - reached and all(answered(port(old, slot)) for slot in untouched)


def test_no_service_task_runs_as_root(
    swarm: SwarmRunner, docker_engine: docker.DockerClient, user_images: dict[str, str], blocks: tuple[int, int]
) -> None:
    """The same rule as the Docker runner's (`ContainerSpec.User`), proven by the ids the tasks print."""
    cases = {
        "none": ("65532:65532", "uid=65532 gid=65532"),
        "root": ("65532:65532", "uid=65532 gid=65532"),
        "plus-zero": ("65532:65532", "uid=65532 gid=65532"),
        "toor": ("65532:65532", "uid=65532 gid=65532"),
        "nobody": ("65532:65532", "uid=65532 gid=65532"),
        "uid-1000": ("1000", "uid=1000 gid=1000"),
    }
    specs = {variant: spec(blocks[0], image=user_images[variant], replicas=1) for variant in cases}
    chosen = spec(blocks[1], image=user_images["root"], replicas=1, run_as_user="4242:4343")
    for one in [*specs.values(), chosen]:
        swarm.apply_service(one)

    def container_of(deployment_id: str) -> str | None:
        service = next(s for s in swarm.list_services() if s.deployment_id == deployment_id)
        return next((t.container_id for t in service.tasks if t.running and t.container_id), None)

    for variant, (user, ids) in cases.items():
        container = wait_for(lambda d=specs[variant].deployment_id: container_of(d), what=f"{variant} running")
        assert docker_engine.api.inspect_container(container)["Config"]["User"] == user, variant
        assert printed_ids(docker_engine, container) == ids, variant
    container = wait_for(lambda: container_of(chosen.deployment_id), what="run_as_user running")
    assert printed_ids(docker_engine, container) == "uid=4242 gid=4343"
