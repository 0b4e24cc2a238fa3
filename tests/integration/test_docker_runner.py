"""DockerRunner against a real engine: what a user of the service would see happen to containers.

Needs the engine that `scripts/ensure_docker.sh` starts and the images of `tests/integration/images/`
(built once per session by the `docker_engine` fixture). The engine has no bridge network, so every
replica uses host networking on a free loopback port. Nothing here needs a database.
"""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest

from deploy_service.runner import (
    LABEL_AGENT,
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_MANAGED,
    LABEL_REPLICA,
    BuildFailed,
    BuildSpec,
    DockerRunner,
    EngineUnavailable,
    ImageUnavailable,
    LogLine,
    ReplicaSpec,
    ReplicaStartFailed,
    RunnerConfigError,
    RunnerError,
    SwarmRunner,
    create_runner,
)
from deploy_service.runner.docker_runner import LABEL_PORT
from deploy_service.runner.settings import RunnerSettings
from tests.helpers import build_steps
from tests.integration.conftest import printed_ids, remove_containers

HTTP_AGENT = "deploy-test/http-agent:latest"
CRASHER = "deploy-test/crasher:latest"
MEMORY_HOG = "deploy-test/memory-hog:latest"
MiB = 1024 * 1024
T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def healthy(port: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}/health")[0] == 200
    except OSError:
        return False


def make_spec(deployment_id: str, image: str, port: int, **overrides: Any) -> ReplicaSpec:
    values: dict[str, Any] = {
        "deployment_id": deployment_id,
        "agent_id": "agent-1",
        "index": 0,
        "generation": 1,
        "image": image,
        "port": port,
        "cpu": 0.25,
        "memory_mb": 64,
    }
    values.update(overrides)
    return ReplicaSpec(**values)


def inspect(client: docker.DockerClient, container_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.api.inspect_container(container_id)
    return data


def wait_exited(client: docker.DockerClient, container_id: str, timeout: float = 15.0) -> None:
    wait_for(
        lambda: inspect(client, container_id)["State"]["Status"] == "exited", timeout=timeout, what="container exit"
    )


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def make_repo(
    path: Path, dockerfile: str, *, branch: str = "feature/agent", files: dict[str, str] | None = None
) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("main branch\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "initial")
    git(path, "checkout", "-q", "-b", branch)
    (path / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        (path / name).write_text(content)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "agent")
    return path


# -- images ------------------------------------------------------------------------------------


def test_the_engine_version_is_the_engines_own(runner: DockerRunner, docker_engine: docker.DockerClient) -> None:
    """What `GET /v1/system/status` shows as `engine.version`."""
    assert runner.engine_version() == docker_engine.version()["Version"]


def test_ensure_image_uses_the_local_image(runner: DockerRunner, docker_engine: docker.DockerClient) -> None:
    info = runner.ensure_image(HTTP_AGENT)

    assert info.source == "local"
    assert info.id == docker_engine.images.get(HTTP_AGENT).id


def test_unpullable_image_is_unavailable_quickly(runner: DockerRunner) -> None:
    started = time.monotonic()
    with pytest.raises(ImageUnavailable, match="localhost:1/nope:latest"):
        runner.ensure_image("localhost:1/nope:latest")
    # The registry refuses the connection at once: the answer must not wait out one engine request
    # (the fixture's docker_timeout, 15 s), let alone the pull timeout.
    assert time.monotonic() - started < 15


# -- replicas ------------------------------------------------------------------------------------


def test_replica_serves_http_on_its_port_and_knows_its_index(
    runner: DockerRunner, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    port = free_port()
    info = runner.start_replica(make_spec(deployment_prefix, HTTP_AGENT, port, index=2, env={"GREETING": "hi"}))

    assert info.running and (info.host, info.port) == ("127.0.0.1", port)
    assert info.name == f"ds-{deployment_prefix}-r2-g1"
    wait_for(lambda: healthy(port), what="GET /health = 200")
    status, body = http("POST", f"http://127.0.0.1:{port}/invoke", b'{"q": 1}')
    assert status == 200
    assert json.loads(body) == {"replica": "2", "version": "1", "echo": {"q": 1}}


def test_every_container_is_hardened(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    port = free_port()
    info = runner.start_replica(make_spec(deployment_prefix, HTTP_AGENT, port, index=1, generation=4, cpu=0.25))
    data = inspect(docker_engine, info.container_id)
    host = data["HostConfig"]

    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["PidsLimit"] == 256
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=64m"}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert host["Memory"] == host["MemorySwap"] == 64 * MiB
    assert host["NanoCpus"] == 250_000_000
    assert not host["Binds"] and not host.get("Mounts") and data["Mounts"] == []
    assert host["RestartPolicy"]["Name"] in {"", "no"}
    assert host["NetworkMode"] == "host"
    assert data["Config"]["User"] == "65534:65534"
    assert f"PORT={port}" in data["Config"]["Env"] and "REPLICA_INDEX=1" in data["Config"]["Env"]
    assert data["Config"]["Labels"] == {
        **data["Config"]["Labels"],
        LABEL_MANAGED: "deploy-service",
        LABEL_DEPLOYMENT: deployment_prefix,
        LABEL_AGENT: "agent-1",
        LABEL_REPLICA: "1",
        LABEL_GENERATION: "4",
        LABEL_PORT: str(port),
    }
    in_container = docker_engine.api.exec_create(info.container_id, ["sh", "-c", "touch /x; touch /tmp/ok && id -u"])
    output = docker_engine.api.exec_start(in_container).decode()
    assert "Read-only file system" in output and "65534" in output.splitlines()


@pytest.mark.parametrize(
    ("variant", "user", "ids"),
    [
        ("none", "65532:65532", "uid=65532 gid=65532"),
        ("root", "65532:65532", "uid=65532 gid=65532"),
        ("zero", "65532:65532", "uid=65532 gid=65532"),
        ("zero-zero", "65532:65532", "uid=65532 gid=65532"),
        ("plus-zero", "65532:65532", "uid=65532 gid=65532"),
        ("toor", "65532:65532", "uid=65532 gid=65532"),
        ("nobody", "65532:65532", "uid=65532 gid=65532"),
        ("uid-1000", "1000", "uid=1000 gid=1000"),
        ("uid-gid-1000", "1000:1000", "uid=1000 gid=1000"),
    ],
)
def test_no_image_user_runs_as_root(
    runner: DockerRunner,
    docker_engine: docker.DockerClient,
    deployment_prefix: str,
    user_images: dict[str, str],
    free_port: Callable[[], int],
    variant: str,
    user: str,
    ids: str,
) -> None:
    """Empty, root, 0, `+0` (the engine reads it as uid 0) and names (`toor` is uid 0 in the image's
    /etc/passwd) run as the default user; a numeric non-zero image user is kept."""
    info = runner.start_replica(make_spec(deployment_prefix, user_images[variant], free_port()))

    assert inspect(docker_engine, info.container_id)["Config"]["User"] == user
    assert printed_ids(docker_engine, info.container_id) == ids


def test_the_agents_run_as_user_and_the_default_user_are_used(
    docker_engine: docker.DockerClient,
    deployment_prefix: str,
    user_images: dict[str, str],
    free_port: Callable[[], int],
) -> None:
    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15, default_uid=7000, default_gid=0))
    try:
        chosen = runner.start_replica(
            make_spec(deployment_prefix, user_images["root"], free_port(), run_as_user="4242:4343")
        )
        defaulted = runner.start_replica(make_spec(deployment_prefix, user_images["toor"], free_port(), index=1))
        assert printed_ids(docker_engine, chosen.container_id) == "uid=4242 gid=4343"
        assert printed_ids(docker_engine, defaulted.container_id) == "uid=7000 gid=0"
    finally:
        runner.close()
        remove_containers(docker_engine, deployment_prefix)  # its own runner: the fixture's cleanup is not used


def test_starting_the_same_replica_twice_adopts_the_container(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    spec = make_spec(deployment_prefix, HTTP_AGENT, free_port())
    first = runner.start_replica(spec)
    docker_engine.api.stop(first.container_id, timeout=5)

    second = runner.start_replica(spec)

    assert second.container_id == first.container_id and second.running
    named = docker_engine.containers.list(all=True, filters={"name": spec.name})
    assert [container.id for container in named] == [first.container_id]


def test_a_foreign_container_with_the_name_is_not_adopted(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    spec = make_spec(deployment_prefix, HTTP_AGENT, free_port())
    labels = {
        LABEL_MANAGED: "deploy-service",
        LABEL_DEPLOYMENT: deployment_prefix,
        LABEL_REPLICA: "7",
        LABEL_GENERATION: "1",
    }
    docker_engine.containers.create(HTTP_AGENT, name=spec.name, labels=labels, network_mode="none")

    with pytest.raises(ReplicaStartFailed, match="not this replica"):
        runner.start_replica(spec)


def test_a_container_that_cannot_start_is_refused_and_removed(
    runner: DockerRunner,
    docker_engine: docker.DockerClient,
    deployment_prefix: str,
    image_tag: str,
    free_port: Callable[[], int],
) -> None:
    broken = f'FROM {HTTP_AGENT}\nENTRYPOINT ["/no/such/binary"]\n'
    docker_engine.images.build(fileobj=io.BytesIO(broken.encode()), tag=image_tag, rm=True)
    spec = make_spec(deployment_prefix, image_tag, free_port())

    with pytest.raises(ReplicaStartFailed, match="no such file or directory"):
        runner.start_replica(spec)
    assert docker_engine.containers.list(all=True, filters={"name": spec.name}) == []


def test_a_container_the_engine_refuses_to_create(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    spec = make_spec(deployment_prefix, HTTP_AGENT, free_port(), memory_mb=1)

    with pytest.raises(ReplicaStartFailed, match="(?i)minimum memory limit"):
        runner.start_replica(spec)
    assert docker_engine.containers.list(all=True, filters={"name": spec.name}) == []


def test_bridge_mode_starts_replicas_on_the_deployments_own_network(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str
) -> None:
    """This engine has no `bridge` network (dockerd --bridge=none), yet bridge mode works: each deployment
    gets a user-defined bridge network, and docker-proxy publishes the port without iptables. No traffic
    is sent to the replicas (only the engine is asked)."""
    assert runner.network_mode() == "host"  # auto would take host here; the spec asks for bridge
    name = runner.network_name(deployment_prefix)
    try:
        started = [
            runner.start_replica(make_spec(deployment_prefix, HTTP_AGENT, 8080, index=i, network_mode="bridge"))
            for i in (0, 1)
        ]  # the second finds the network the first made
        for info in started:
            data = inspect(docker_engine, info.container_id)
            assert set(data["NetworkSettings"]["Networks"]) == {name}
            assert [b["HostIp"] for b in data["NetworkSettings"]["Ports"]["8080/tcp"]] == ["127.0.0.1"]
            assert info.port == int(data["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
        assert runner.list_networks() >= {deployment_prefix}
        with pytest.raises(RunnerError, match="network"):
            runner.remove_network(deployment_prefix)  # containers still attached
        for info in started:
            runner.remove_replica(info.container_id, stop_timeout=1)
        assert runner.remove_network(deployment_prefix) is True
        assert runner.remove_network(deployment_prefix) is False
        assert deployment_prefix not in runner.list_networks()
    finally:
        remove_containers(docker_engine, deployment_prefix)
        for row in docker_engine.api.networks(names=[name]):
            docker_engine.api.remove_network(row["Id"])


def test_a_network_of_that_name_that_is_not_the_deployments_is_refused(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str
) -> None:
    name = runner.network_name(deployment_prefix)
    docker_engine.api.create_network(name, driver="bridge", labels={"someone.else": "1"})
    try:
        with pytest.raises(ReplicaStartFailed, match="not this deployment's"):
            runner.start_replica(make_spec(deployment_prefix, HTTP_AGENT, 8080, network_mode="bridge"))
        mine = {"label": f"{LABEL_DEPLOYMENT}={deployment_prefix}"}
        assert docker_engine.containers.list(all=True, filters=mine) == []
    finally:
        docker_engine.api.remove_network(name)


def test_auto_network_mode_follows_the_engine(docker_engine: docker.DockerClient) -> None:
    has_bridge = any(network.name == "bridge" for network in docker_engine.networks.list())

    auto = DockerRunner(RunnerSettings(network_mode="auto"))
    try:
        assert auto.network_mode() == ("bridge" if has_bridge else "host")
    finally:
        auto.close()


def test_a_missing_image_is_unavailable(runner: DockerRunner, deployment_prefix: str) -> None:
    with pytest.raises(ImageUnavailable):
        runner.start_replica(make_spec(deployment_prefix, "deploy-test/does-not-exist:latest", 18080))


def test_list_replicas_reports_managed_containers(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    port = free_port()
    web = runner.start_replica(make_spec(deployment_prefix, HTTP_AGENT, port, index=0, generation=3))
    crash = runner.start_replica(make_spec(deployment_prefix, CRASHER, free_port(), index=1, generation=2))
    wait_exited(docker_engine, crash.container_id)

    mine = {r.container_id: r for r in runner.list_replicas() if r.deployment_id == deployment_prefix}

    assert set(mine) == {web.container_id, crash.container_id}
    listed_web, listed_crash = mine[web.container_id], mine[crash.container_id]
    assert (listed_web.index, listed_web.generation, listed_web.port, listed_web.state) == (0, 3, port, "running")
    assert listed_web.name == web.name and listed_web.agent_id == "agent-1" and listed_web.exit_code is None
    assert listed_web.created_at is not None and abs(datetime.now(UTC) - listed_web.created_at) < timedelta(minutes=1)
    assert (listed_crash.index, listed_crash.generation, listed_crash.state) == (1, 2, "exited")
    assert listed_crash.exit_code == 3 and listed_crash.exited


def test_a_namespace_sees_only_its_own_containers(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    namespaced = DockerRunner(RunnerSettings(network_mode="host", namespace=f"ns-{deployment_prefix}"))
    try:
        spec = make_spec(deployment_prefix, HTTP_AGENT, free_port())
        info = namespaced.start_replica(spec)

        assert [r.container_id for r in namespaced.list_replicas()] == [info.container_id]
        assert all(r.container_id != info.container_id for r in runner.list_replicas())
        assert inspect(docker_engine, info.container_id)["Config"]["Labels"][LABEL_MANAGED] == f"ns-{deployment_prefix}"
        with pytest.raises(ReplicaStartFailed, match="not this replica"):
            runner.start_replica(spec)
    finally:
        namespaced.close()


def test_crash_exit_code_and_logs_with_streams_and_timestamps(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    info = runner.start_replica(make_spec(deployment_prefix, CRASHER, free_port(), index=4))
    wait_exited(docker_engine, info.container_id)

    exit_info = runner.exit_info(info.container_id)
    lines = list(runner.logs(info.container_id, replica=4))

    assert exit_info.exit_code == 3 and exit_info.oom_killed is False
    assert exit_info.finished_at is not None and exit_info.finished_at > before
    assert sorted((line.stream, line.line) for line in lines) == [
        ("stderr", "crasher: something went wrong (stderr)"),
        ("stdout", "crasher: starting up (stdout)"),
    ], "stdout and stderr are separate pipes: the engine keeps their order only within each stream"
    assert [line.timestamp for line in lines] == sorted(line.timestamp for line in lines if line.timestamp)
    for line in lines:
        assert line.replica == 4
        assert line.timestamp is not None and line.timestamp.tzinfo == UTC
        assert before < line.timestamp <= exit_info.finished_at
    assert [line.line for line in runner.logs(info.container_id, replica=4, tail=1)] == [lines[-1].line]
    assert list(runner.logs(info.container_id, replica=4, since=exit_info.finished_at + timedelta(seconds=1))) == []


def test_long_lines_come_back_joined_then_cut_at_the_line_cap(
    runner: DockerRunner,
    docker_engine: docker.DockerClient,
    deployment_prefix: str,
    image_tag: str,
    free_port: Callable[[], int],
) -> None:
    """The engine stores lines over 16 KiB as several partial entries; the runner joins them again, and
    hands on a line longer than `log_line_max_bytes` (16 KiB) in pieces of that size (multi-byte
    characters are never cut: see tests/unit/test_log_line_cap.py)."""
    shell = f'FROM {HTTP_AGENT}\nENTRYPOINT ["/bin/sh", "-c"]\n'
    docker_engine.images.build(fileobj=io.BytesIO(shell.encode()), tag=image_tag, rm=True)
    script = "head -c 40000 /dev/zero | tr '\\0' x; echo; echo short >&2; printf no-newline"
    info = runner.start_replica(make_spec(deployment_prefix, image_tag, free_port(), command=[script]))
    wait_exited(docker_engine, info.container_id)

    lines = list(runner.logs(info.container_id, replica=0))

    assert [line.line for line in lines if line.stream == "stdout"] == [
        "x" * 16384,
        "x" * 16384,
        "x" * 7232,
        "no-newline",
    ]
    stdout = [line for line in lines if line.stream == "stdout"]
    assert len({line.timestamp for line in stdout[:3]}) == 1, "a line's pieces share the stamp of its start"
    assert [line.line for line in lines if line.stream == "stderr"] == ["short"]


def test_memory_hog_is_oom_killed(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    info = runner.start_replica(make_spec(deployment_prefix, MEMORY_HOG, free_port(), memory_mb=32))
    wait_exited(docker_engine, info.container_id)

    exit_info = runner.exit_info(info.container_id)

    assert exit_info.oom_killed is True
    assert exit_info.exit_code == 137


def test_follow_yields_lines_as_they_come_and_ends_when_the_container_stops(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    info = runner.start_replica(make_spec(deployment_prefix, CRASHER, free_port(), env={"CRASH_DELAY": "2"}))
    stream = runner.logs(info.container_id, replica=0, follow=True)

    first = next(stream)
    still_running = inspect(docker_engine, info.container_id)["State"]["Running"]
    rest: list[LogLine] = []
    reader = threading.Thread(target=lambda: rest.extend(stream), daemon=True)
    reader.start()
    reader.join(timeout=15)

    assert still_running, "the first line should arrive while the container still runs"
    assert not reader.is_alive(), "following should end when the container stops"
    assert sorted((line.stream, line.line) for line in [first, *rest]) == [
        ("stderr", "crasher: something went wrong (stderr)"),
        ("stdout", "crasher: starting up (stdout)"),
    ]


def test_stats_give_memory_and_cpu_counters(
    runner: DockerRunner, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    port = free_port()
    info = runner.start_replica(make_spec(deployment_prefix, HTTP_AGENT, port, memory_mb=64))
    wait_for(lambda: healthy(port), what="GET /health = 200")

    def timed_stats() -> tuple[Any, float]:
        started = time.monotonic()
        stats = runner.stats(info.container_id)
        return stats, time.monotonic() - started

    first, first_took = timed_stats()
    for _ in range(5):
        http("POST", f"http://127.0.0.1:{port}/invoke", b"{}")
    second, second_took = timed_stats()

    # The engine samples a container every second; a read that is not one-shot waits for a second
    # sample (so two of them take at least 2 s). One-shot reads answer from the current one.
    assert first_took + second_took < 1.5, "one-shot stats must not wait for a second sample"
    assert second.memory_limit_bytes == 64 * MiB
    assert 0 < second.memory_bytes < 64 * MiB
    assert second.online_cpus >= 1
    assert second.cpu_total_ns >= first.cpu_total_ns > 0
    assert second.system_cpu_ns > first.system_cpu_ns
    assert second.sampled_at > first.sampled_at and second.sampled_at.tzinfo == UTC
    percent = second.cpu_percent_since(first)
    assert percent is not None and percent >= 0


def test_remove_replica_twice_is_fine(
    runner: DockerRunner, docker_engine: docker.DockerClient, deployment_prefix: str, free_port: Callable[[], int]
) -> None:
    info = runner.start_replica(make_spec(deployment_prefix, HTTP_AGENT, free_port()))

    runner.remove_replica(info.container_id, stop_timeout=5.0)
    runner.remove_replica(info.container_id, stop_timeout=5.0)

    with pytest.raises(docker.errors.NotFound):
        docker_engine.api.inspect_container(info.container_id)
    assert all(r.container_id != info.container_id for r in runner.list_replicas())
    for gone in (runner.exit_info, runner.stats, lambda cid: runner.logs(cid, replica=0)):
        with pytest.raises(RunnerError, match="No such container"):
            gone(info.container_id)


def test_an_exit_between_two_event_streams_is_announced_once(
    docker_engine: docker.DockerClient,
    deployment_prefix: str,
    free_port: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exit watcher's next stream asks for the events since the last one opened: a `die` in between counts.

    A namespace of the test's own: the replayed second before the first stream may hold other tests' exits.
    """
    import deploy_service.runner.docker_runner as module

    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15, namespace=f"ns-{deployment_prefix}"))

    real_open = module.open_stream
    opened: list[dict[str, Any]] = []
    exited: list[str] = []

    def open_stream(api: Any, path: str, ident: str, *, params: dict[str, Any]) -> Any:
        opened.append(dict(params))
        if len(opened) == 1:
            response = real_open(api, path, ident, params=params)
            response.close()  # the first stream ends at once ...
            return response
        if len(opened) == 2:  # ... and a replica runs to its end before the second one opens
            info = runner.start_replica(make_spec(deployment_prefix, CRASHER, free_port()))
            wait_exited(docker_engine, info.container_id)
            exited.append(info.container_id)
        return real_open(api, path, ident, params=params)

    monkeypatch.setattr(module, "open_stream", open_stream)
    monkeypatch.setattr(module, "EXIT_WATCH_READ_SECONDS", 0.3)
    announced: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=runner.watch_exits, args=(lambda: announced.append(time.monotonic()), stop), kwargs={"retry": 0.1}
    )
    watcher.start()
    try:
        wait_for(lambda: announced, timeout=15, what="the exit announced")
        wait_for(lambda: len(opened) >= 5, timeout=15, what="three more streams after it")
    finally:
        stop.set()
        watcher.join(timeout=10)
        for container in exited:
            docker_engine.api.remove_container(container, force=True)
        runner.close()
    assert exited and not watcher.is_alive()
    assert "since" not in opened[0] and all("since" in params for params in opened[1:])
    assert len(announced) == 1, "a replayed event is not announced again"


# -- builds ------------------------------------------------------------------------------------


def test_build_from_a_local_git_branch(
    runner: DockerRunner,
    docker_engine: docker.DockerClient,
    image_tag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dockerfile = f"FROM {HTTP_AGENT}\nLABEL deploy-test.built=yes\nENV BUILT_FROM=git\nCOPY hello.txt /hello.txt\n"
    repo = make_repo(tmp_path / "repo", dockerfile, files={"hello.txt": "hello\n"})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    output: list[str] = []

    spec = BuildSpec(git_url=str(repo), branch="feature/agent", tag=image_tag, allow_local=True)
    info = runner.build_image(spec, on_output=output.append)

    assert info.source == "built" and info.ref == image_tag
    image = docker_engine.images.get(image_tag)
    assert image.id == info.id
    assert image.labels["deploy-test.built"] == "yes"
    assert "BUILT_FROM=git" in image.attrs["Config"]["Env"]
    assert any(line.startswith("Step 1/4 : FROM") for line in output)
    assert list(scratch.iterdir()) == [], "the clone's temporary directory must be removed"


def test_build_of_a_missing_branch_fails(runner: DockerRunner, image_tag: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", f"FROM {HTTP_AGENT}\n")

    spec = BuildSpec(git_url=str(repo), branch="no-such-branch", tag=image_tag, allow_local=True)
    with pytest.raises(BuildFailed) as failure:
        runner.build_image(spec, on_output=lambda line: None)

    assert "no-such-branch" in failure.value.log


def test_build_with_a_failing_instruction_fails_with_its_log(
    runner: DockerRunner, docker_engine: docker.DockerClient, image_tag: str, tmp_path: Path
) -> None:
    marker = f"building-now-{uuid.uuid4().hex[:8]}"
    repo = make_repo(tmp_path / "repo", f"FROM {HTTP_AGENT}\nRUN echo {marker} && false\n")

    spec = BuildSpec(git_url=str(repo), branch="feature/agent", tag=image_tag, allow_local=True)
    with pytest.raises(BuildFailed, match="non-zero code") as failure:
        runner.build_image(spec, on_output=lambda line: None)

    assert marker in failure.value.log and "Step 2/2" in failure.value.log
    with pytest.raises(docker.errors.ImageNotFound):
        docker_engine.images.get(image_tag)
    assert build_steps(docker_engine, marker) == [], "the failed step's container is removed"


def test_build_refuses_a_dockerfile_that_leaves_the_repository(
    runner: DockerRunner, image_tag: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", f"FROM {HTTP_AGENT}\n")
    (repo / "Escape").symlink_to("/etc/hostname")
    git(repo, "add", "Escape")
    git(repo, "commit", "-q", "-m", "escape")

    spec = BuildSpec(git_url=str(repo), branch="feature/agent", tag=image_tag, allow_local=True, dockerfile="Escape")
    with pytest.raises(BuildFailed, match="outside the repository"):
        runner.build_image(spec, on_output=lambda line: None)


# -- engine outage -----------------------------------------------------------------------------


@pytest.mark.parametrize("docker_host", ["unix://{tmp}/no-engine.sock", "tcp://127.0.0.1:1"])
def test_an_unreachable_engine_is_engine_unavailable(
    docker_host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host.format(tmp=tmp_path))
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    timeout = 2.0
    dead = DockerRunner(RunnerSettings(docker_timeout=timeout))

    calls: list[Callable[[], object]] = [
        dead.ping,
        dead.list_replicas,
        lambda: dead.start_replica(make_spec("unreachable", HTTP_AGENT, 18080)),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(EngineUnavailable):
            call()
        # Nothing listens there: the connection is refused at once, so no call waits out the timeout.
        assert time.monotonic() - started < timeout


def test_build_timeout_stops_the_build(
    runner: DockerRunner, docker_engine: docker.DockerClient, image_tag: str, tmp_path: Path
) -> None:
    marker = f"slow-step-{uuid.uuid4().hex[:8]}"
    repo = make_repo(tmp_path / "repo", f"FROM {HTTP_AGENT}\nRUN echo {marker} && sleep 30\n")
    output: list[str] = []

    spec = BuildSpec(git_url=str(repo), branch="feature/agent", tag=image_tag, allow_local=True, build_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(BuildFailed, match="build timed out after 1.5s"):
        runner.build_image(spec, on_output=output.append)

    # Cut at the deadline, not waited out: the step alone sleeps 30 s.
    assert spec.build_timeout <= time.monotonic() - started < 30
    assert marker in output
    wait_for(
        lambda: build_steps(docker_engine, marker) == [],
        what="the cancelled build's container to be removed",
    )


def test_create_runner_builds_the_configured_backend() -> None:
    assert isinstance(create_runner(RunnerSettings()), DockerRunner)
    assert isinstance(create_runner(RunnerSettings(backend="swarm")), SwarmRunner)
    with pytest.raises(RunnerConfigError, match="RUNNER"):
        create_runner(RunnerSettings(backend="kubernetes"))
    with pytest.raises(RunnerConfigError, match="DOCKER_NETWORK_MODE"):
        create_runner(RunnerSettings(network_mode="overlay"))
