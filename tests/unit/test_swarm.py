"""The Swarm backend's pure parts: the service spec it sends, how it reads tasks, ports and the registry path.

The engine round trips (create, scale, rolling update, removal) are in tests/integration.
"""

from __future__ import annotations

import base64
import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from deploy_service.config import load_config, validate_config
from deploy_service.errors import ConfigError, EngineUnavailable
from deploy_service.reconciler.drivers import restart_condition
from deploy_service.reconciler.ports import free_block
from deploy_service.runner import BuildFailed, BuildSpec, ImageInfo, ServiceInfo, ServiceSpec, create_runner
from deploy_service.runner.base import RegistryCredentials
from deploy_service.runner.docker_client import NoStoredAuth
from deploy_service.runner.settings import RunnerSettings
from deploy_service.runner.swarm_records import (
    escape_template,
    index_template,
    port_template,
    service_document,
    service_info,
    task_info,
)
from deploy_service.runner.swarm_runner import SwarmRunner, current_tasks, registry_reference, send_service

SPEC = ServiceSpec(
    deployment_id="d1",
    agent_id="a1",
    generation=3,
    image="agent:1",
    replicas=2,
    port_block=331,
    env={"KEY": "a {{ b }}", "PORT": "9999"},
    cpu=0.25,
    memory_mb=64,
    restart_delay=0.5,
    restart_attempts=4,
    restart_window=60,
    stop_timeout=2,
    update_monitor=1.6,
    update_delay=1.6,
)


def document(spec: ServiceSpec = SPEC) -> dict[str, Any]:
    return service_document(
        spec,
        namespace="ns",
        user="65534:65534",
        image="agent:1",
        pids_limit=128,
        tmpfs_mb=16,
        log_max_size="1m",
        log_max_file=2,
    )


def test_the_service_spec_is_hardened_and_restarts_and_updates_as_configured() -> None:
    doc = document()
    container = doc["TaskTemplate"]["ContainerSpec"]
    assert doc["Name"] == "ds-d1" and doc["Mode"] == {"Replicated": {"Replicas": 2}}
    assert container["Labels"] == doc["Labels"]
    assert doc["Labels"]["deploy-service.managed"] == "ns" and doc["Labels"]["deploy-service.generation"] == "3"
    assert container["CapabilityDrop"] == ["ALL"] and container["ReadOnly"] is True
    assert container["User"] == "65534:65534"
    assert container["Mounts"][0]["Type"] == "tmpfs" and container["Mounts"][0]["Target"] == "/tmp"
    limits = doc["TaskTemplate"]["Resources"]["Limits"]
    assert limits == {"NanoCPUs": 250_000_000, "MemoryBytes": 64 * 1024 * 1024, "Pids": 128}
    assert doc["TaskTemplate"]["RestartPolicy"] == {
        "Condition": "any",
        "Delay": 500_000_000,
        "MaxAttempts": 4,
        "Window": 60_000_000_000,
    }
    assert doc["TaskTemplate"]["Networks"] == [{"Target": "host"}]
    # The next slot is updated only once the last has run through its watch; a failure in it pauses the update
    # (the planner goes back to the previous spec on ports of its own, never Swarm's rollback on the old ports).
    assert doc["UpdateConfig"]["Order"] == "start-first" and doc["UpdateConfig"]["FailureAction"] == "pause"
    assert doc["UpdateConfig"]["Delay"] == doc["UpdateConfig"]["Monitor"] == 1_600_000_000
    env = dict(item.split("=", 1) for item in container["Env"])
    assert env["KEY"] == 'a {{"{{"}} b }}'
    # The automatic rollback's update (back to a generation that served) is not watched: it goes on through a
    # task's failure instead of pausing half way back.
    back = document(replace(SPEC, watched=False))
    assert back["UpdateConfig"]["FailureAction"] == "continue" and back["UpdateConfig"]["Order"] == "start-first"
    assert env["PORT"] == port_template(331)


@pytest.mark.parametrize(
    ("kind", "policy", "condition"),
    [
        ("service", "always", "any"),
        ("service", "on-failure", "any"),
        ("service", "never", "none"),
        ("job", "on-failure", "on-failure"),
        ("job", "always", "on-failure"),
        ("job", "never", "none"),
    ],
)
def test_a_job_is_a_service_whose_tasks_complete_never_is_no_restart(kind: str, policy: str, condition: str) -> None:
    assert restart_condition(kind, policy) == condition
    doc = service_document(
        replace(SPEC, restart_condition=restart_condition(kind, policy)),
        namespace="ns",
        user="65534:65534",
        image="agent:1",
        pids_limit=128,
        tmpfs_mb=16,
        log_max_size="1m",
        log_max_file=2,
    )
    assert doc["TaskTemplate"]["RestartPolicy"]["Condition"] == condition
    assert doc["Mode"] == {"Replicated": {"Replicas": 2}}


def test_scaling_changes_only_the_mode() -> None:
    scaled = service_document(
        ServiceSpec(**{**SPEC.__dict__, "replicas": 7}),
        namespace="ns",
        user="65534:65534",
        image="agent:1",
        pids_limit=128,
        tmpfs_mb=16,
        log_max_size="1m",
        log_max_file=2,
    )
    assert scaled["TaskTemplate"] == document()["TaskTemplate"]
    assert scaled["Mode"] == {"Replicated": {"Replicas": 7}}


def render(template: str, slot: str) -> str:
    """A tiny evaluator of exactly the template forms the records use (checked on the real engine too)."""
    out = template.replace('{{"{{"}}', "\0")
    out = out.replace("{{if eq (len .Task.Slot) 1}}0{{end}}", "0" if len(slot) == 1 else "")
    out = out.replace("{{.Task.Slot}}", slot)
    if out.startswith("{{if "):
        for branch in out[len("{{if ") : -len("{{end}}")].split("{{else if "):
            condition, value = branch.split("}}", 1)
            if condition == f'eq .Task.Slot "{slot}"':
                return value
        return ""
    return out.replace("\0", "{{")


@pytest.mark.parametrize(("slot", "port", "index"), [("1", "33101", "0"), ("9", "33109", "8"), ("99", "33199", "98")])
def test_port_and_index_per_slot(slot: str, port: str, index: str) -> None:
    assert render(port_template(331), slot) == port
    assert render(index_template(), slot) == index


def test_escaped_values_come_out_verbatim() -> None:
    for value in ["{{.Task.Slot}}", "{{{", "}}", "plain"]:
        assert render(escape_template(value), "1") == value


BLOCK_331 = {"deploy-service.port-block": "331"}


def task(slot: int, state: str, desired: str, generation: int, minute: int, **extra: Any) -> dict[str, Any]:
    return {
        "ID": f"t{slot}-{minute}",
        "ServiceID": "s1",
        "NodeID": "n1",
        "Slot": slot,
        "DesiredState": desired,
        "CreatedAt": f"2026-01-01T00:{minute:02d}:00.000000001Z",
        "Spec": {
            "ContainerSpec": {
                "Labels": {"deploy-service.generation": str(generation), "deploy-service.port-block": "331"}
            }
        },
        "Status": {"State": state, "ContainerStatus": {"ContainerID": f"c{slot}{minute}", **extra}},
    }


def test_tasks_are_mapped_onto_replica_states() -> None:
    nodes = {"n1": "10.0.0.5"}
    running = task_info(task(2, "running", "running", 3, 1), nodes, "127.0.0.1")
    assert running is not None
    assert (running.index, running.state, running.port, running.host, running.generation) == (
        1,
        "running",
        33102,
        "10.0.0.5",
        3,
    )
    failed = task_info(task(1, "failed", "shutdown", 3, 1, ExitCode=3), {}, "127.0.0.1")
    assert failed is not None and failed.state == "exited" and failed.exit_code == 3 and failed.failed
    assert failed.host == "127.0.0.1"
    starting = task_info(task(1, "preparing", "running", 3, 1), {}, "127.0.0.1")
    assert starting is not None and starting.state == "created" and not starting.failed
    rejected = task_info(task(1, "rejected", "shutdown", 3, 1), {}, "127.0.0.1")
    assert rejected is not None and rejected.state == "dead" and rejected.failed
    stopped = task_info(task(1, "shutdown", "shutdown", 3, 1, ExitCode=0), {}, "127.0.0.1")
    assert stopped is not None and stopped.ended and not stopped.failed
    assert task_info({**task(1, "running", "running", 3, 1), "Slot": None}, {}, "127.0.0.1") is None


BLOCK_332 = {"deploy-service.port-block": "332"}


def service(tasks: list[dict[str, Any]], replicas: int = 2) -> ServiceInfo:
    infos = [info for info in (task_info(t, {}, "127.0.0.1") for t in tasks) if info is not None]
    raw = {
        "ID": "s1",
        "Spec": {
            "Labels": {
                "deploy-service.deployment": "d1",
                "deploy-service.generation": "4",
                "deploy-service.port-block": "332",
            },
            "Mode": {"Replicated": {"Replicas": replicas}},
        },
        "PreviousSpec": {"Labels": {"deploy-service.port-block": "331", "deploy-service.generation": "3"}},
        "UpdateStatus": {"State": "updating"},
    }
    found = service_info(raw, infos)
    assert found is not None
    return found


def test_the_current_task_of_each_replica() -> None:
    during_update = service(
        [
            task(1, "running", "running", 3, 1),
            task(1, "starting", "running", 4, 5),  # start-first: the old task serves until this one runs
            task(2, "shutdown", "shutdown", 3, 1),
            task(2, "running", "running", 4, 4),
            task(3, "running", "shutdown", 3, 1),  # scaled away
        ]
    )
    assert during_update.port_blocks == {331, 332} and during_update.update_state == "updating"
    assert during_update.generation == 4 and during_update.previous_generation == 3
    current = current_tasks(during_update)
    assert sorted(current) == [0, 1]
    assert current[0].generation == 3 and current[0].running
    assert current[1].generation == 4 and current[1].port == 33102
    after_crash = current_tasks(service([task(1, "failed", "shutdown", 4, 1), task(1, "ready", "ready", 4, 2)], 1))
    assert after_crash[0].state == "created"
    given_up = current_tasks(service([task(1, "failed", "shutdown", 4, 1), task(1, "failed", "running", 4, 2)], 1))
    assert given_up[0].task_id == "t1-2" and given_up[0].exit_code is None


def test_port_blocks_are_free_aligned_and_inside_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    probed: list[tuple[int, int]] = []

    def bindable(first: int, count: int, *, lingering: bool = False) -> bool:
        probed.append((first, count))
        return first != 20401  # something else listens in block 204

    monkeypatch.setattr("deploy_service.reconciler.ports._bindable", bindable)
    used: set[int] = {201}
    blocks = {free_block(used, (20000, 20499), 3) for _ in range(3)}
    assert blocks == {200, 202, 203} and used == {200, 201, 202, 203}
    assert all(count == 3 and first % 100 == 1 for first, count in probed)
    with pytest.raises(RuntimeError, match="no free block"):
        free_block(used, (20000, 20499), 1)
    with pytest.raises(RuntimeError):
        free_block(set(), (20050, 20150), 1)  # no whole block inside


def test_a_block_with_a_port_in_use_is_skipped() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("0.0.0.0", 0))
        taken = listener.getsockname()[1]
        block = taken // 100
        if block * 100 + 99 > 65535 or taken % 100 == 0:
            pytest.skip("the kernel gave a port outside a usable block")
        low = block * 100
        with pytest.raises(RuntimeError, match="no free block"):
            free_block(set(), (low, low + 99), taken % 100)


def test_runner_choice_and_swarm_settings_are_validated() -> None:
    assert isinstance(create_runner(RunnerSettings(backend="swarm")), SwarmRunner)
    with pytest.raises(ConfigError, match="RUNNER"):
        validate_config(load_config({"RUNNER": "kubernetes"}))
    with pytest.raises(ConfigError, match="host networking"):
        validate_config(load_config({"RUNNER": "swarm", "DOCKER_NETWORK_MODE": "bridge"}))
    with pytest.raises(ConfigError, match="99"):
        validate_config(load_config({"RUNNER": "swarm", "MAX_REPLICAS": "150"}))
    validate_config(load_config({"RUNNER": "swarm", "SWARM_REGISTRY": "registry.example.com/agents"}))


class FakeApi:
    """Records the tag and push calls of a build; the push answers like an engine refusing it."""

    def __init__(self, push_chunks: list[dict[str, Any]]) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.push_chunks = push_chunks

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.calls.append(("tag", image, repository, tag))

    def push(self, repository: str, **kwargs: Any) -> Any:
        self.calls.append(("push", repository, kwargs["tag"], kwargs["auth_config"]))
        return iter(self.push_chunks)


def built_runner(monkeypatch: pytest.MonkeyPatch, api: FakeApi, **settings: str) -> SwarmRunner:
    runner = SwarmRunner(RunnerSettings(**settings))
    monkeypatch.setattr(runner, "_api", lambda: api)
    monkeypatch.setattr(
        "deploy_service.runner.docker_runner.DockerRunner.build_image",
        lambda self, spec, on_output, cancel=None: ImageInfo(ref=spec.tag, id="sha256:1", source="built"),
    )
    return runner


BUILD = BuildSpec(git_url="https://example.com/a.git", branch="main", tag="deploy-service/agent-x:r2")


def test_a_built_image_is_pushed_to_the_registry_and_deployed_from_there(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi([{"status": "Pushed", "id": "abc"}, {"status": "r2: digest: sha256:1"}])
    runner = built_runner(
        monkeypatch,
        api,
        registry="registry.example.com/agents/",
        registry_username="u",
        registry_password="p",
    )
    output: list[str] = []
    info = runner.build_image(BUILD, on_output=output.append)
    assert info.source == "built"
    assert api.calls == [
        ("tag", "deploy-service/agent-x:r2", "registry.example.com/agents/agent-x", "r2"),
        ("push", "registry.example.com/agents/agent-x", "r2", {"username": "u", "password": "p"}),
    ]
    assert output[0] == "Pushing registry.example.com/agents/agent-x:r2"
    assert runner.deploy_reference(BUILD.tag, built=True) == "registry.example.com/agents/agent-x:r2"
    assert runner.deploy_reference("busybox:1", built=False) == "busybox:1"


def test_a_refused_push_fails_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi([{"error": "denied: requested access to the resource is denied"}])
    runner = built_runner(monkeypatch, api, registry="registry.example.com/agents")
    with pytest.raises(BuildFailed, match="requested access to the resource is denied"):
        runner.build_image(BUILD, on_output=lambda line: None)
    assert api.calls[1][3] is None  # no credentials configured: none sent


def test_without_a_registry_the_local_image_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi([])
    runner = built_runner(monkeypatch, api)
    assert runner.build_image(BUILD, on_output=lambda line: None).ref == BUILD.tag
    assert api.calls == [] and runner.deploy_reference(BUILD.tag, built=True) == BUILD.tag
    assert (
        registry_reference("r.example.com:5000/team", "deploy-service/agent-y:r1")
        == "r.example.com:5000/team/agent-y:r1"
    )


class InfoApi:
    def __init__(self, swarm: dict[str, Any]) -> None:
        self.swarm = swarm

    def info(self) -> dict[str, Any]:
        return {"Swarm": self.swarm}


@pytest.mark.parametrize(
    ("swarm", "message"),
    [
        ({"LocalNodeState": "inactive", "ControlAvailable": False}, "not a Swarm manager \\(node state inactive\\)"),
        ({"LocalNodeState": "active", "ControlAvailable": False}, "not a Swarm manager \\(node state active\\)"),
    ],
)
def test_an_engine_that_is_not_a_swarm_manager_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, swarm: dict[str, Any], message: str
) -> None:
    runner = SwarmRunner(RunnerSettings())
    monkeypatch.setattr(runner, "_api", lambda: InfoApi(swarm))
    with pytest.raises(EngineUnavailable, match=message):
        runner.ping()


def test_a_manager_answers_and_describes_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = SwarmRunner(RunnerSettings(registry="registry.example.com/agents"))
    state = {"LocalNodeState": "active", "ControlAvailable": True, "Nodes": 3, "Managers": 1}
    monkeypatch.setattr(runner, "_api", lambda: InfoApi(state))
    runner.ping()
    assert runner.describe() == {
        "swarm": {
            "node_state": "active",
            "manager": True,
            "nodes": 3,
            "managers": 1,
            "registry": "registry.example.com/agents",
        }
    }


class RecordingSession:
    """Stands in for the HTTP transport of a real SDK client: records each request, answers 200 with `answer`."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        self.requests.append(request)
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(self.answer).encode()
        response.request = request
        return response


@pytest.mark.parametrize("operation", ["create", "update"])
@pytest.mark.parametrize("login", [None, "agent", "another registry"])
def test_service_calls_send_the_spec_unchanged_and_only_the_agents_login(
    operation: str, login: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    decoy = {"auths": {"registry.example.com": {"auth": base64.b64encode(b"machine:machine-password").decode()}}}
    (tmp_path / "config.json").write_text(json.dumps(decoy))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # the machine's login, which must never be sent
    api = docker.APIClient(base_url="tcp://127.0.0.1:1", version="1.43")
    api._auth_configs = NoStoredAuth()  # as every client of the runner holds it (docker_client.engine_client)
    transport = RecordingSession({"ID": "svc1", "Warnings": None})
    monkeypatch.setattr(api, "send", transport.send)
    registry = {"agent": "registry.example.com", "another registry": "ghcr.io"}.get(login or "")
    credentials = RegistryCredentials(registry, "robot", "agent-password") if registry else None
    spec = {**document()}
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = "registry.example.com/team/agent:1"
    current = None if operation == "create" else {"ID": "svc1", "Version": {"Index": 42}}

    assert send_service(api, spec, current=current, auth=credentials) == "svc1"

    (sent,) = transport.requests
    assert sent.method == "POST"
    assert sent.url == (
        "http://127.0.0.1:1/v1.43/services/create"
        if operation == "create"
        else "http://127.0.0.1:1/v1.43/services/svc1/update?version=42"
    )
    assert json.loads(sent.body or b"") == spec
    header = sent.headers.get("X-Registry-Auth")
    if login == "agent":
        assert json.loads(base64.urlsafe_b64decode(header or "")) == {
            "username": "robot",
            "password": "agent-password",
            "serveraddress": "registry.example.com",
        }
    else:
        assert header is None
    assert "machine-password" not in str(sent.headers)
