"""Deployments end to end on the real engine: API → database → reconciler (its real loop) → Docker.

Replicas use host networking on loopback. Each test runs its own reconciler with second-scale timings
in an engine namespace of its own, so it never sees (or removes) anyone else's containers.

The lifecycle tests (deploy, scale, rolling restart, stop, delete, a container removed by hand, a
crashing image) run on both runners: `docker` (the reconciler runs containers) and `swarm` (each
deployment a service of the single-node Swarm that `swarm_manager` makes sure of).
"""

from __future__ import annotations

import io
import ipaddress
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.reconciler import Reconciler, ReconcileSettings
from deploy_service.runner import LABEL_DEPLOYMENT, LABEL_MANAGED, DockerRunner, Runner, RunnerError, SwarmRunner
from deploy_service.runner.settings import RunnerSettings
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import Settings
from tests.factories import AuthActions
from tests.helpers import ENGINE, Receiver, build_steps, verify

HTTP_AGENT = "deploy-test/http-agent:latest"
SETTINGS = replace(ENGINE, sample_every=0.5)
FAST_HEALTH = {"path": "/health", "interval_seconds": 0.3, "timeout_seconds": 1.0, "retries": 2}


SWARM_TASK_NAME = "com.docker.swarm.task.name"
BOTH_RUNNERS = pytest.mark.parametrize("engine", ["docker", "swarm"], indirect=True)


def _replica_index(labels: dict[str, str]) -> int:
    """From our label (docker runner) or from the Swarm task's slot (`<service>.<slot>.<task>`, 1-based)."""
    if "deploy-service.replica" in labels:
        return int(labels["deploy-service.replica"])
    return int(labels[SWARM_TASK_NAME].split(".")[1]) - 1


class Engine:
    """The test's view of the engine: its namespace's containers (for Swarm: those not yet ended)."""

    def __init__(self, client: docker.DockerClient, namespace: str, runner: str = "docker") -> None:
        self.client, self.namespace, self.runner = client, namespace, runner
        self.reconciler: Reconciler | None = None
        """The app's reconciler loop, for a test that must stop it (before it repairs what the test broke)."""

    def containers(self, deployment_id: str | None = None) -> list[Any]:
        """The namespace's containers (one list call, no per-container inspect that could race a removal).

        Swarm keeps the ended containers of past tasks as history; only live ones stand for replicas.
        """
        rows = self.client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={self.namespace}"})
        return [
            SimpleNamespace(
                id=row["Id"], labels=row["Labels"], status=row["State"], replica=_replica_index(row["Labels"])
            )
            for row in rows
            if (deployment_id is None or row["Labels"].get(LABEL_DEPLOYMENT) == deployment_id)
            and (self.runner == "docker" or row["State"] not in ("exited", "dead"))
        ]

    def inspect(self, container_id: str) -> Any:
        return self.client.containers.get(container_id)

    def remove_all(self) -> None:
        services = (  # only the swarm runner makes services (and the engine may not be a swarm at all)
            self.client.api.services(filters={"label": f"{LABEL_MANAGED}={self.namespace}"})
            if self.runner == "swarm"
            else []
        )
        for service in services:
            try:
                self.client.api.remove_service(service["ID"])
            except docker.errors.NotFound:
                pass
        for container in self.containers():
            try:
                self.client.api.remove_container(container.id, force=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture(params=["docker"])
def engine(
    request: pytest.FixtureRequest,
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[Engine]:
    """The app drives the real engine, with a reconciler loop of its own, for this test.

    The docker runner unless the test is parametrised (`BOTH_RUNNERS`) with `swarm` as well.
    """
    yield from _engine(request, request.param, docker_engine, app, monkeypatch, configure, SETTINGS)


def _engine(
    request: pytest.FixtureRequest,
    kind: str,
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
    settings: ReconcileSettings,
) -> Iterator[Engine]:
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    config = RunnerSettings(network_mode="host", namespace=namespace, docker_timeout=20)
    runner: Runner
    if kind == "swarm":
        request.getfixturevalue("swarm_manager")
        runner = SwarmRunner(config)
    else:
        runner = DockerRunner(config)
    monkeypatch.setitem(app.extensions, RUNNER_KEY, runner)
    configure(ALLOW_LOCAL_GIT_SOURCES=True, LOG_FOLLOW_POLL_SECONDS=0.1)
    reconciler = Reconciler(app, runner=runner, settings=settings)
    reconciler.start()
    view = Engine(docker_engine, namespace, kind)
    view.reconciler = reconciler
    yield view
    reconciler.stop()
    view.remove_all()
    runner.close()


class Client:
    def __init__(self, client: FlaskClient, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return getattr(self.client, method)(path, headers=self.headers, json=body)

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.call("get", f"/v1/deployments/{deployment_id}").get_json()
        return body

    def events(self, deployment_id: str, event_type: str) -> list[dict[str, Any]]:
        url = f"/v1/deployments/{deployment_id}/events?limit=200&event_type={event_type}"
        items: list[dict[str, Any]] = self.call("get", url).get_json()["items"]
        return items

    def agent(self, **fields: Any) -> str:
        body = {"name": f"agent-{uuid.uuid4().hex[:8]}", "image": HTTP_AGENT, **fields}
        response = self.call("post", "/v1/agents", body)
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["id"])

    def deploy(self, agent_id: str, replicas: int = 1) -> str:
        response = self.call("post", f"/v1/agents/{agent_id}/deploy", {"replicas": replicas})
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["id"])


@pytest.fixture()
def api(client: FlaskClient, auth: AuthActions) -> Client:
    _, headers = auth.user()
    return Client(client, headers)


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_is(api: Client, deployment_id: str, *statuses: str) -> Callable[[], bool]:
    return lambda: api.deployment(deployment_id)["status"] in statuses


@BOTH_RUNNERS
def test_image_deploy_becomes_ready_and_answers(api: Client, engine: Engine) -> None:
    env = {"LOOKS_LIKE_A_TEMPLATE": "{{.Task.Slot}} {{"}
    deployment_id = api.deploy(api.agent(health_check=FAST_HEALTH, env=env), replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    body = api.deployment(deployment_id)
    assert body["replicas"] == {"desired": 2, "running": 2, "ready": 2}
    for instance in body["instances"]:
        reply = requests.post(f"http://127.0.0.1:{instance['port']}/invoke", json={"q": "hi"}, timeout=5)
        assert reply.json() == {"replica": str(instance["index"]), "version": "1", "echo": {"q": "hi"}}
    assert len(engine.containers(deployment_id)) == 2
    passed = api.events(deployment_id, "health_passed")
    assert sorted(event["data"]["replica"] for event in passed) == [0, 1]
    for container in engine.containers(deployment_id):
        assert "LOOKS_LIKE_A_TEMPLATE={{.Task.Slot}} {{" in engine.inspect(container.id).attrs["Config"]["Env"]
    if engine.runner == "swarm":
        [service] = engine.client.api.services(filters={"label": f"{LABEL_DEPLOYMENT}={deployment_id}"})
        spec = service["Spec"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 2
        assert spec["UpdateConfig"]["Order"] == "start-first" and spec["UpdateConfig"]["FailureAction"] == "pause"
        assert spec["TaskTemplate"]["RestartPolicy"]["MaxAttempts"] == SETTINGS.restart_budget


def test_the_agents_resources_are_the_containers_limits(api: Client, engine: Engine) -> None:
    """The service's half of the limits: the agent's resources reach the container. The runner's
    hardening of every container (capabilities, read-only root, user, pids, logs, mounts) is shown in
    tests/integration/test_docker_runner.py::test_every_container_is_hardened."""
    deployment_id = api.deploy(api.agent(resources={"cpu": 0.25, "memory_mb": 64}))  # not the defaults (0.5, 512)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    [listed] = engine.containers(deployment_id)
    host = engine.inspect(listed.id).attrs["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 250_000_000


def test_local_git_source_is_built_with_log_and_progress(api: Client, engine: Engine, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text(f"FROM {HTTP_AGENT}\nENV BUILT_FROM=git\nLABEL purpose=test\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "release/v1", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "agent"], check=True)
    agent_id = api.agent(image=None, source={"git_url": f"file://{repo}", "branch": "release/v1"})
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "ready", "failed"), timeout=60, what="built")
    body = api.deployment(deployment_id)
    assert body["status"] == "ready", body["error"]
    assert body["image"] == f"deploy-service/agent-{agent_id}:{deployment_id[:8]}-r1"
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    release = api.call("get", f"/v1/deployments/{deployment_id}/releases/1").get_json()
    assert release["source"] == {"git_url": f"file://{repo}", "branch": "release/v1", "commit": head}
    lines = api.call("get", f"/v1/deployments/{deployment_id}/logs?source=build&tail=1000").get_json()["lines"]
    assert any(line["line"].startswith("Step 1/") for line in lines)
    steps = api.events(deployment_id, "build_progress")
    assert {event["data"]["total"] for event in steps} == {3}
    env = engine.inspect(engine.containers(deployment_id)[0].id).attrs["Config"]["Env"]
    assert "BUILT_FROM=git" in env


def test_a_git_host_that_resolves_to_a_private_address_fails_the_build_and_says_so(
    api: Client, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "git.example.test":  # a public-looking name whose answer is loopback
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        ipaddress.ip_address(str(host).strip("[]"))  # nothing else is looked up for real
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    agent_id = api.agent(image=None, source={"git_url": "https://git.example.test/acme/agent.git"})
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "failed"), timeout=30, what="failed")
    error = api.deployment(deployment_id)["error"]
    assert "git.example.test" in error and "ALLOWED_GIT_HOSTS" in error and "127.0.0.1" not in error
    [failed] = api.events(deployment_id, "build_failed")
    assert failed["message"] == error
    with pytest.raises(docker.errors.ImageNotFound):
        engine.client.images.get(f"deploy-service/agent-{agent_id}:r1")


@pytest.fixture()
def one_build_each(
    request: pytest.FixtureRequest,
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[Engine]:
    """The `engine` fixture's docker runner, with one build per user at once (`BUILDS_PER_USER=1`)."""
    settings = replace(SETTINGS, builds_per_user=1)
    yield from _engine(request, "docker", docker_engine, app, monkeypatch, configure, settings)


def slow_repo(path: Path, marker: str) -> str:
    """A git repo whose build has a step that sleeps 30 s (its command carries `marker`); its file:// URL."""
    path.mkdir()
    (path / "Dockerfile").write_text(f"FROM {HTTP_AGENT}\nRUN echo {marker} && sleep 30\n")
    git = ["git", "-C", str(path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "slow"], check=True)
    return f"file://{path}"


def test_stop_and_delete_cancel_builds_and_a_users_builds_past_builds_per_user_wait(
    api: Client, one_build_each: Engine, tmp_path: Path
) -> None:
    engine = one_build_each
    marker = f"slow-{uuid.uuid4().hex[:8]}"
    url = slow_repo(tmp_path / "repo", marker)
    first = api.deploy(api.agent(image=None, source={"git_url": url, "branch": "main"}))
    wait_until(lambda: build_steps(engine.client, marker), timeout=30, what="the first build's slow step")
    second = api.deploy(api.agent(image=None, source={"git_url": url, "branch": "main"}))

    [queued] = wait_until(lambda: api.events(second, "build_queued"), what="the second build to wait")
    assert "BUILDS_PER_USER" in queued["message"]
    assert api.deployment(second)["status"] == "deploying" and api.events(second, "build_started") == []
    assert len(build_steps(engine.client, marker)) == 1

    assert api.call("post", f"/v1/deployments/{first}/stop").status_code == 202
    wait_until(lambda: api.events(first, "build_cancelled"), timeout=10, what="the first build to be cancelled")
    wait_until(status_is(api, first, "stopped"), what="stopped")
    wait_until(lambda: api.events(second, "build_started"), timeout=10, what="the freed slot to start the second")
    assert api.deployment(first)["error"] is None  # cancelled, not failed

    wait_until(lambda: len(build_steps(engine.client, marker)) == 1, timeout=30, what="the second build's slow step")
    assert api.call("delete", f"/v1/deployments/{second}").status_code == 200
    wait_until(lambda: build_steps(engine.client, marker) == [], timeout=10, what="the deleted build to be dropped")
    for deployment_id in (first, second):
        with pytest.raises(docker.errors.ImageNotFound):
            engine.client.images.get(api.deployment(deployment_id)["image"])


@BOTH_RUNNERS
def test_scale_up_and_down(api: Client, engine: Engine) -> None:
    deployment_id = api.deploy(api.agent())
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    assert api.call("post", f"/v1/deployments/{deployment_id}/scale", {"replicas": 3}).status_code == 202
    wait_until(lambda: api.deployment(deployment_id)["replicas"]["ready"] == 3, what="3 ready")
    assert len(engine.containers(deployment_id)) == 3
    assert api.call("post", f"/v1/deployments/{deployment_id}/scale", {"replicas": 1}).status_code == 202
    wait_until(lambda: len(engine.containers(deployment_id)) == 1, what="scaled down")
    [container] = engine.containers(deployment_id)
    assert container.replica == 0
    assert api.deployment(deployment_id)["replicas"] == {"desired": 1, "running": 1, "ready": 1}


@BOTH_RUNNERS
def test_rolling_restart_then_stop_then_start_again(api: Client, engine: Engine) -> None:
    deployment_id = api.deploy(api.agent(health_check=FAST_HEALTH), replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    before = {c.id for c in engine.containers(deployment_id)}
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").status_code == 202

    def replaced() -> bool:
        current = engine.containers(deployment_id)
        assert current, "a rolling restart never takes every replica down"
        return not ({c.id for c in current} & before) and api.deployment(deployment_id)["status"] == "ready"

    wait_until(replaced, what="rolled")
    assert {c.labels["deploy-service.generation"] for c in engine.containers(deployment_id)} == {"2"}
    assert len(api.events(deployment_id, "replica_replaced")) == 2

    assert api.call("post", f"/v1/deployments/{deployment_id}/stop").status_code == 202
    wait_until(status_is(api, deployment_id, "stopped"), what="stopped")
    assert engine.containers(deployment_id) == []
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").status_code == 202
    wait_until(status_is(api, deployment_id, "ready"), what="ready again")
    assert len(engine.containers(deployment_id)) == 2


@BOTH_RUNNERS
def test_delete_kills_and_removes_containers(api: Client, engine: Engine) -> None:
    agent_id = api.agent()
    deployment_id = api.deploy(agent_id, replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    response = api.call("delete", f"/v1/deployments/{deployment_id}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "killed" and body["ended_at"]
    assert api.call("get", f"/v1/agents/{agent_id}").get_json()["status"] == "stopped"
    wait_until(lambda: engine.containers(deployment_id) == [], what="the reconciler to remove the containers")
    assert api.call("delete", f"/v1/deployments/{deployment_id}").get_json() == body


@BOTH_RUNNERS
def test_an_orphan_that_cannot_be_removed_stops_no_other_deployment(
    api: Client, engine: Engine, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan_id = api.deploy(api.agent())
    wait_until(status_is(api, orphan_id, "ready"), what="ready")
    runner = app.extensions[RUNNER_KEY]
    attempts: list[str] = []
    refusing = [True]
    orphan_containers = {container.id for container in engine.containers(orphan_id)}
    if engine.runner == "swarm":
        real_remove_service = runner.remove_service

        def remove_service(deployment_id: str, **kwargs: Any) -> bool:
            if deployment_id == orphan_id and refusing[0]:
                attempts.append(deployment_id)
                raise RunnerError("the engine refused to remove the service")
            return bool(real_remove_service(deployment_id, **kwargs))

        monkeypatch.setattr(runner, "remove_service", remove_service)
    else:
        real_remove_replica = runner.remove_replica

        def remove_replica(container: str, **kwargs: Any) -> None:
            if container in orphan_containers and refusing[0]:
                attempts.append(container)
                raise RunnerError("the engine refused to remove the container")
            real_remove_replica(container, **kwargs)

        monkeypatch.setattr(runner, "remove_replica", remove_replica)
    assert api.call("delete", f"/v1/deployments/{orphan_id}").status_code == 200
    wait_until(lambda: len(attempts) >= 2, what="the orphan's removal to fail on two passes")

    other_id = api.deploy(api.agent(), replicas=2)
    wait_until(status_is(api, other_id, "ready"), what="another deployment to converge past the stuck orphan")
    assert {c.id for c in engine.containers(orphan_id)} == orphan_containers, "the orphan is still there"

    refusing[0] = False
    wait_until(lambda: engine.containers(orphan_id) == [], what="the orphan removed once the engine lets it")
    assert len(engine.containers(other_id)) == 2


STOP_TIMEOUT = 5.0
"""What a stop of an agent that ignores SIGTERM costs here: half the default CONTAINER_STOP_TIMEOUT (10 s),
still far more than an answer takes, and more than the other tests' `stop_timeout`."""


@pytest.fixture()
def slow_stop_engine(
    request: pytest.FixtureRequest,
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[Engine]:
    """The `engine` fixture's docker runner, with a stop timeout (`STOP_TIMEOUT`) far longer than an answer takes."""
    slow = replace(SETTINGS, stop_timeout=STOP_TIMEOUT)
    yield from _engine(request, "docker", docker_engine, app, monkeypatch, configure, slow)


@pytest.fixture()
def sigterm_ignoring_image(docker_engine: docker.DockerClient) -> Iterator[str]:
    """An image whose process ignores SIGTERM (as many agents do): `docker stop` waits out its timeout."""
    tag = f"deploy-test/ignores-sigterm-{uuid.uuid4().hex[:10]}:latest"
    script = "trap '' TERM; while :; do sleep 1; done"
    dockerfile = f'FROM {HTTP_AGENT}\nENTRYPOINT ["/bin/sh", "-c", "{script}"]\n'
    docker_engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    docker_engine.images.remove(tag, force=True)


def test_delete_of_an_agent_that_ignores_sigterm_answers_at_once_and_the_reconciler_removes_it(
    api: Client, slow_stop_engine: Engine, sigterm_ignoring_image: str
) -> None:
    engine = slow_stop_engine
    deployment_id = api.deploy(api.agent(image=sigterm_ignoring_image), replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    before = {container.id for container in engine.containers(deployment_id)}
    assert len(before) == 2

    started = time.monotonic()
    response = api.call("delete", f"/v1/deployments/{deployment_id}")
    answered = time.monotonic() - started

    assert response.status_code == 200 and response.get_json()["status"] == "killed"
    # Stopping either container takes the whole stop timeout; the answer came back before it ended,
    # while the containers were still there.
    assert answered < STOP_TIMEOUT, answered
    assert {container.id for container in engine.containers(deployment_id)} == before
    wait_until(
        lambda: engine.containers(deployment_id) == [],
        timeout=STOP_TIMEOUT + 20,
        what="the reconciler to remove the containers",
    )


@BOTH_RUNNERS
def test_container_removed_by_hand_comes_back(api: Client, engine: Engine) -> None:
    deployment_id = api.deploy(api.agent())
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    [container] = engine.containers(deployment_id)
    engine.client.api.remove_container(container.id, force=True)
    replacement = wait_until(
        lambda: [c for c in engine.containers(deployment_id) if c.id != container.id and c.status == "running"],
        what="recreated",
    )
    assert len(replacement) == 1
    # Seen either as gone, or (when the list caught it mid-removal) as exited; both are recorded.
    wait_until(
        lambda: api.events(deployment_id, "container_missing") or api.events(deployment_id, "container_exited"),
        what="the event",
    )
    wait_until(status_is(api, deployment_id, "ready"), what="ready again")
    assert api.deployment(deployment_id)["instances"][0]["restarts"] >= 1


@BOTH_RUNNERS
def test_crashing_image_backs_off_then_fails(api: Client, engine: Engine, configure: Callable[..., Settings]) -> None:
    configure(ALERT_CRASH_LOOP_RESTARTS=1)
    deployment_id = api.deploy(api.agent(image="deploy-test/crasher:latest", env={"CRASH_DELAY": "0.2"}))
    wait_until(status_is(api, deployment_id, "failed"), timeout=60, what="failed")
    exits = api.events(deployment_id, "container_exited")
    assert len(exits) == SETTINGS.restart_budget + 1
    assert {event["data"]["exit_code"] for event in exits} == {3}
    backoffs = [event["data"]["delay_seconds"] for event in reversed(api.events(deployment_id, "restart_backoff"))]
    # The reconciler backs off exponentially; Swarm's restart policy has one fixed delay.
    assert backoffs == ([0.2, 0.4] if engine.runner == "docker" else [0.2, 0.2])
    body = api.deployment(deployment_id)
    assert "kept crashing" in body["error"] and "exit code 3" in body["error"]
    assert engine.containers(deployment_id) == []
    active = api.call("get", f"/v1/alerts?deployment_id={deployment_id}&status=active").get_json()["items"]
    by_kind = {alert["kind"]: alert for alert in active}
    assert set(by_kind) == {"crash_loop", "deployment_failed"}
    assert by_kind["crash_loop"]["count"] >= 2 and by_kind["crash_loop"]["severity"] == "critical"


@BOTH_RUNNERS
def test_out_of_memory_is_reported(api: Client, engine: Engine) -> None:
    agent_id = api.agent(image="deploy-test/memory-hog:latest", resources={"memory_mb": 32})
    deployment_id = api.deploy(agent_id)
    exits = wait_until(lambda: api.events(deployment_id, "container_exited"), what="an exit")
    assert exits[-1]["data"]["oom_killed"] is True
    assert "out of memory" in exits[-1]["message"]
    wait_until(status_is(api, deployment_id, "failed"), timeout=60, what="failed")
    assert "out of memory" in api.deployment(deployment_id)["error"]
    active = api.call("get", f"/v1/alerts?deployment_id={deployment_id}&status=active").get_json()["items"]
    assert {"memory_high", "deployment_failed"} <= {alert["kind"] for alert in active}


@BOTH_RUNNERS
def test_never_healthy_fails_after_the_deadline(api: Client, engine: Engine) -> None:
    deployment_id = api.deploy(api.agent(image="deploy-test/never-healthy:latest", health_check=FAST_HEALTH))
    started = time.monotonic()
    wait_until(status_is(api, deployment_id, "failed"), timeout=SETTINGS.progress_deadline + 20, what="failed")
    assert time.monotonic() - started >= SETTINGS.progress_deadline - 1
    assert "did not become ready" in api.deployment(deployment_id)["error"]
    assert api.events(deployment_id, "health_failed")
    assert engine.containers(deployment_id) == []


@BOTH_RUNNERS
def test_restarted_service_adopts_without_duplicates(api: Client, engine: Engine, app: Flask) -> None:
    deployment_id = api.deploy(api.agent(), replicas=3)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    before = sorted(c.id for c in engine.containers(deployment_id))
    runner = app.extensions[RUNNER_KEY]
    second = Reconciler(app, runner=runner, settings=SETTINGS)
    try:
        for _ in range(3):
            second.run_once()
    finally:
        second.close()
    assert sorted(c.id for c in engine.containers(deployment_id)) == before


@BOTH_RUNNERS
def test_runtime_logs_and_live_follow(api: Client, engine: Engine) -> None:
    deployment_id = api.deploy(api.agent())
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    port = api.deployment(deployment_id)["instances"][0]["port"]
    requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    lines = wait_until(
        lambda: api.call("get", f"/v1/deployments/{deployment_id}/logs?tail=50").get_json()["lines"], what="logs"
    )
    assert any("listening" in line["line"] for line in lines)
    assert {line["replica"] for line in lines} == {0}
    assert all(line["timestamp"] and line["stream"] in ("stdout", "stderr") for line in lines)

    response = api.client.get(
        f"/v1/deployments/{deployment_id}/logs?follow=true&tail=0", headers=api.headers, buffered=False
    )
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    seen = ""
    deadline = time.monotonic() + 20
    while "GET /health" not in seen and time.monotonic() < deadline:
        seen += next(chunks).decode()
    assert "GET /health" in seen
    api.call("delete", f"/v1/deployments/{deployment_id}")
    rest = "".join(chunk.decode() for chunk in chunks)
    assert "event: end" in rest
    end = rest.split("event: end\ndata: ", 1)[1].split("\n", 1)[0]
    assert json.loads(end)["status"] == "killed"


@BOTH_RUNNERS
def test_logs_of_a_replica_whose_container_is_gone_are_empty_not_an_error(api: Client, engine: Engine) -> None:
    """Removed behind the service's back (the reconciler not yet there to replace it): nothing left to read."""
    deployment_id = api.deploy(api.agent(), replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    logs = f"/v1/deployments/{deployment_id}/logs"
    wait_until(lambda: {line["replica"] for line in api.call("get", logs).get_json()["lines"]} == {0, 1}, what="logs")
    assert engine.reconciler is not None
    engine.reconciler.stop()
    [gone] = [c for c in engine.containers(deployment_id) if c.replica == 0 and c.status == "running"]
    engine.client.api.remove_container(gone.id, force=True)

    response = api.call("get", f"{logs}?replica=0")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["lines"] == []
    rest = api.call("get", logs)
    assert rest.status_code == 200 and {line["replica"] for line in rest.get_json()["lines"]} == {1}


@BOTH_RUNNERS
def test_ready_checks_the_engine(client: FlaskClient, engine: Engine) -> None:
    body = client.get("/health/ready").get_json()
    assert body["checks"]["engine"]["status"] == "ok"
    assert body["checks"]["engine"]["runner"] == engine.runner
    # A Swarm runner's ping passes only on an active manager; the node's details are not shown.
    assert set(body["checks"]["engine"]) == {"status", "runner", "latency_ms"}


def test_engine_unreachable_means_503_and_nothing_written(
    api: Client, app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    agent_id = api.agent()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    dead = DockerRunner(RunnerSettings(network_mode="host", namespace="dead", docker_timeout=2))
    monkeypatch.setitem(app.extensions, RUNNER_KEY, dead)
    response = api.call("post", f"/v1/agents/{agent_id}/deploy", {})
    assert response.status_code == 503
    assert response.get_json()["error"] == "engine_unavailable"
    assert api.call("get", "/v1/deployments").get_json()["total"] == 0
    assert api.call("get", f"/v1/agents/{agent_id}").get_json()["status"] == "idle"
    ready = api.client.get("/health/ready")
    assert ready.status_code == 503 and ready.get_json()["checks"]["engine"]["status"] == "error"


def test_interact_through_keys_on_the_real_engine(api: Client, engine: Engine) -> None:
    agent_id = api.agent(health_check=FAST_HEALTH)
    other_id = api.agent()
    deployment_id = api.deploy(agent_id, replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    created = api.call("post", f"/v1/agents/{agent_id}/api-key", {"name": "client"}).get_json()
    key = {"X-API-Key": created["key"]}
    url = f"/v1/agents/{agent_id}/interact"
    answers = [api.client.post(url, headers=key, json={"n": n}) for n in range(4)]
    assert all(answer.status_code == 200 for answer in answers)
    assert sorted(answer.get_json()["replica"] for answer in answers) == ["0", "0", "1", "1"]
    assert answers[3].get_json()["echo"] == {"n": 3}
    assert api.client.post(f"/v1/agents/{other_id}/interact", headers=key, json={}).status_code == 404

    api.call("delete", f"/v1/agents/{agent_id}/api-keys/{created['id']}")
    assert api.client.post(url, headers=key, json={}).status_code == 401

    assert api.call("post", f"/v1/deployments/{deployment_id}/stop").status_code == 202
    wait_until(status_is(api, deployment_id, "stopped"), what="stopped")
    stopped = api.call("post", url, {})
    assert stopped.status_code == 503 and stopped.get_json()["error"] == "no_ready_replica"


def test_interact_times_out_on_a_slow_agent(api: Client, engine: Engine, configure: Callable[..., Settings]) -> None:
    agent_id = api.agent()
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    configure(INTERACT_TIMEOUT_SECONDS=0.5)
    slow = api.call("post", f"/v1/agents/{agent_id}/interact", {"sleep": 2})
    assert slow.status_code == 504 and slow.get_json()["error"] == "agent_timeout"
    quick = api.call("post", f"/v1/agents/{agent_id}/interact", {"sleep": 0})
    assert quick.status_code == 200 and quick.get_json()["echo"] == {"sleep": 0}


@BOTH_RUNNERS
def test_resource_samples_on_the_real_engine(api: Client, engine: Engine, app: Flask) -> None:
    deployment_id = api.deploy(api.agent(resources={"memory_mb": 48}))
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    url = f"/v1/deployments/{deployment_id}/metrics"
    body = wait_until(lambda: (m := api.call("get", url).get_json())["sampled_at"] and m, what="a sample")
    assert 0 < body["memory_bytes"] < 48 * 1024 * 1024
    assert body["memory_limit_bytes"] == 48 * 1024 * 1024
    [instance] = body["instances"]
    assert instance["memory_bytes"] == body["memory_bytes"]


def test_hallucination_alert_and_signed_webhooks_on_the_real_engine(
    api: Client, engine: Engine, configure: Callable[..., Settings]
) -> None:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True, WEBHOOK_RETRY_BASE_SECONDS=0.05, ALERT_MIN_SAMPLES=5)
    good, failing = Receiver(), Receiver(status=500)
    try:
        hook = api.call("post", "/v1/webhooks", {"url": good.url, "kinds": ["hallucination_rate_high"]}).get_json()
        api.call("post", "/v1/webhooks", {"url": failing.url, "kinds": ["hallucination_rate_high"]})
        agent_id = api.agent()
        deployment_id = api.deploy(agent_id)
        wait_until(status_is(api, deployment_id, "ready"), what="ready")
        key = {
            "X-API-Key": api.call("post", f"/v1/agents/{agent_id}/api-key", {"scopes": ["telemetry"]}).get_json()["key"]
        }

        def report(hallucinated: bool) -> None:
            body = {"prompt": "p", "response": "r", "hallucinated": hallucinated}
            assert api.client.post("/v1/evaluations", headers=key, json=body).status_code == 201

        for flag in (True, True, False, True, True):
            report(flag)
        active = api.call("get", f"/v1/alerts?deployment_id={deployment_id}&status=active").get_json()["items"]
        assert [alert["kind"] for alert in active] == ["hallucination_rate_high"]
        wait_until(lambda: good.received, what="a signed delivery")
        headers, body = good.received[0]
        assert verify(hook["secret"], headers, body) and json.loads(body)["type"] == "alert.raised"
        wait_until(lambda: len(failing.received) >= 2, what="retries to the failing receiver")

        for _ in range(15):
            report(False)
        assert api.call("get", f"/v1/alerts?deployment_id={deployment_id}&status=active").get_json()["items"] == []
        wait_until(lambda: any(json.loads(b)["type"] == "alert.resolved" for _, b in good.received), what="resolved")
    finally:
        good.close()
        failing.close()


def _log_lines(api: Client, deployment_id: str, query: str = "") -> Any:
    response = api.call("get", f"/v1/deployments/{deployment_id}/logs?tail=1000{query}")
    assert response.status_code == 200, response.get_json()
    return [(line["replica"], line["stream"], line["line"]) for line in response.get_json()["lines"]]


CRASHER_SAID = [
    (0, "stdout", "crasher: starting up (stdout)"),
    (0, "stderr", "crasher: something went wrong (stderr)"),
]


@BOTH_RUNNERS
def test_a_crashed_containers_lines_are_its_previous_and_outlive_every_container(api: Client, engine: Engine) -> None:
    """Swarm restarts a crashed task itself: its container's lines are read when the service is removed."""
    deployment_id = api.deploy(api.agent(image="deploy-test/crasher:latest", env={"CRASH_DELAY": "2"}))
    wait_until(lambda: api.events(deployment_id, "container_restarted"), timeout=30, what="a restart")
    [first] = api.events(deployment_id, "container_exited")
    if engine.runner == "docker":
        assert sorted(_log_lines(api, deployment_id, "&previous=true&replica=0")) == sorted(CRASHER_SAID)

    wait_until(status_is(api, deployment_id, "failed"), timeout=60, what="failed")
    wait_until(lambda: engine.containers(deployment_id) == [], what="the last container removed")
    assert first["data"]["container_id"] not in {c.id for c in engine.containers()}
    lines = _log_lines(api, deployment_id)
    assert sorted(lines) == sorted(CRASHER_SAID * (SETTINGS.restart_budget + 1))  # every container's, none live
    previous = api.call("get", f"/v1/deployments/{deployment_id}/logs?previous=true&replica=0").get_json()
    assert sorted((line["stream"], line["line"]) for line in previous["lines"]) == sorted(s[1:] for s in CRASHER_SAID)


@BOTH_RUNNERS
def test_a_stopped_deployments_lines_are_served_after_its_containers_are_removed(api: Client, engine: Engine) -> None:
    deployment_id = api.deploy(api.agent(), replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    wait_until(lambda: {r for r, _, _ in _log_lines(api, deployment_id)} == {0, 1}, what="both replicas' lines")
    before = _log_lines(api, deployment_id)
    assert api.call("post", f"/v1/deployments/{deployment_id}/stop").status_code == 202
    wait_until(status_is(api, deployment_id, "stopped"), what="stopped")
    assert engine.containers(deployment_id) == []

    after = _log_lines(api, deployment_id)
    assert set(before) <= set(after) and any("listening" in line for _, _, line in after)
    assert api.call("get", f"/v1/deployments/{deployment_id}/logs?previous=true&replica=1").status_code == 200


@pytest.fixture()
def second_version(docker_engine: docker.DockerClient) -> Iterator[str]:
    """An image like the http agent but of another id (version 2 of the agent); removed afterwards."""
    tag = f"deploy-test/release-{uuid.uuid4().hex[:8]}:v2"
    dockerfile = f"FROM {HTTP_AGENT}\nENV AGENT_VERSION=2\n"
    docker_engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    try:
        docker_engine.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


@BOTH_RUNNERS
def test_a_restart_with_a_new_image_is_release_2_and_a_rollback_runs_release_1_again(
    api: Client, engine: Engine, second_version: str
) -> None:
    first_id = engine.client.images.get(HTTP_AGENT).id
    second_id = engine.client.images.get(second_version).id
    agent_id = api.agent(health_check=FAST_HEALTH)
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")

    def releases() -> list[tuple[int, str]]:
        items = api.call("get", f"/v1/deployments/{deployment_id}/releases").get_json()["items"]
        return [(item["number"], item["status"]) for item in items]

    def runs(image_id: str) -> bool:
        containers = engine.containers(deployment_id)
        return bool(containers) and all(engine.inspect(c.id).attrs["Image"] == image_id for c in containers)

    assert api.call("patch", f"/v1/agents/{agent_id}", {"image": second_version}).status_code == 200
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").get_json()["revision"] == 2
    wait_until(lambda: releases() == [(2, "active"), (1, "superseded")], timeout=60, what="release 2 active")
    wait_until(lambda: runs(second_id), what="the replicas to run release 2's image")

    response = api.call("post", f"/v1/deployments/{deployment_id}/rollback", {})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["image"] == HTTP_AGENT
    wait_until(
        lambda: releases() == [(3, "active"), (2, "rolled_back"), (1, "superseded")], timeout=60, what="rolled back"
    )
    wait_until(lambda: runs(first_id), what="the replicas to run release 1's image")
    third = api.call("get", f"/v1/deployments/{deployment_id}/releases/3").get_json()
    assert third["reason"] == "rollback" and third["rollback_of"] == 1
    assert {"field": "image", "from": second_version, "to": HTTP_AGENT} in third["changes"]
    assert {change["field"] for change in third["changes"]} <= {"image", "image_id"}
    if engine.runner == "docker":
        assert third["image_id"] == first_id
