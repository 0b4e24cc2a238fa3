"""Builds contained on the real engine: memory, swap and CPU limits, the build network, stored credentials.

Every build step (`RUN`) runs in a container the engine makes for the build; these tests read that
container's own cgroup files from inside a step, make a step outgrow its memory, and look at what the
runner sent the engine (through `EngineProxy`, on a unix socket of the test's own: nothing leaves the
machine).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from deploy_service.runner import BuildCancelled, BuildFailed, BuildSpec, Cancellation, DockerRunner, ImageUnavailable
from deploy_service.runner.settings import RunnerSettings
from tests.faults.engine_proxy import EngineProxy
from tests.helpers import build_steps
from tests.integration.test_docker_runner import HTTP_AGENT, git, make_repo, wait_for

MEMORY_HOG = "deploy-test/memory-hog:latest"
CGROUP_LIMITS = (
    "for f in memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes cpu/cpu.cfs_quota_us "
    "cpu/cpu.cfs_period_us memory.max memory.swap.max cpu.max; do "
    '[ -r /sys/fs/cgroup/$f ] && echo "limit $f $(cat /sys/fs/cgroup/$f)"; done; true'
)


@pytest.fixture()
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineProxy]:
    """The engine behind a proxy of the test's own (`DOCKER_HOST` points at it)."""
    engine = EngineProxy().start()
    monkeypatch.setenv("DOCKER_HOST", engine.docker_host)
    yield engine
    engine.close()


def build(runner: DockerRunner, repo: Path, tag: str) -> list[str]:
    output: list[str] = []
    runner.build_image(
        BuildSpec(git_url=str(repo), branch="feature/agent", tag=tag, allow_local=True), on_output=output.append
    )
    return output


def limits(output: list[str]) -> dict[str, str]:
    """The cgroup files a build step printed (`limit <file> <value>`)."""
    return {words[1]: " ".join(words[2:]) for words in (line.split() for line in output) if words[:1] == ["limit"]}


def test_every_build_step_runs_within_the_build_memory_and_cpu_limits_without_swap(
    image_tag: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", f"FROM {HTTP_AGENT}\nRUN {CGROUP_LIMITS}\n")
    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15, build_memory_mb=96, build_cpus=0.5))
    try:
        seen = limits(build(runner, repo, image_tag))
    finally:
        runner.close()

    if "memory.max" in seen:  # cgroup v2
        assert seen["memory.max"] == str(96 * 1024 * 1024)
        assert seen["memory.swap.max"] == "0"
        assert seen["cpu.max"] == "50000 100000"
    else:  # cgroup v1
        assert seen["memory/memory.limit_in_bytes"] == str(96 * 1024 * 1024)
        assert seen["memory/memory.memsw.limit_in_bytes"] == str(96 * 1024 * 1024)
        assert (seen["cpu/cpu.cfs_quota_us"], seen["cpu/cpu.cfs_period_us"]) == ("50000", "100000")


def test_a_build_step_that_outgrows_the_build_memory_is_killed(image_tag: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", f"FROM {MEMORY_HOG}\nRUN HOG_MAX_MB=256 /bin/sh /agent/hog.sh\n")
    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15, build_memory_mb=32))
    try:
        with pytest.raises(BuildFailed, match="non-zero code: 137") as failure:
            build(runner, repo, image_tag)
    finally:
        runner.close()

    assert "without being OOM-killed" not in failure.value.log


def test_build_network_none_cuts_build_steps_off_the_network(
    image_tag: str, tmp_path: Path, proxy: EngineProxy
) -> None:
    repo = make_repo(tmp_path / "repo", f'FROM {HTTP_AGENT}\nRUN echo "links $(ls /sys/class/net)"\n')
    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15, build_network="none"))
    try:
        output = build(runner, repo, image_tag)
    finally:
        runner.close()

    [request] = [line for line in proxy.requests if line.startswith("POST ") and "/build?" in line]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(request.split(" ", 1)[1]).query)["networkmode"] == ["none"]
    assert "links lo" in output


CREDENTIALS = base64.b64encode(b"operator:hunter2-not-for-tenants").decode()


@pytest.fixture()
def stored_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A docker config dir, as `docker login` leaves it, with the operator's credentials for two registries."""
    config = tmp_path / "docker-config"
    config.mkdir()
    auths = {"127.0.0.1:1": {"auth": CREDENTIALS}, "https://index.docker.io/v1/": {"auth": CREDENTIALS}}
    (config / "config.json").write_text(json.dumps({"auths": auths}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    return CREDENTIALS


def test_builds_and_pulls_never_send_the_credentials_stored_on_the_machine(
    image_tag: str, tmp_path: Path, proxy: EngineProxy, stored_credentials: str, docker_engine: docker.DockerClient
) -> None:
    repo = make_repo(tmp_path / "repo", f"FROM {HTTP_AGENT}\nLABEL built=yes\n")
    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15))
    try:
        build(runner, repo, image_tag)
        with pytest.raises(ImageUnavailable):  # a registry on loopback port 1: refused at once, nothing leaves
            runner.ensure_image("127.0.0.1:1/tenant/agent:1")
    finally:
        runner.close()

    calls = [line for line, _ in proxy.headers]
    assert any("/build?" in line for line in calls) and any("/images/create?" in line for line in calls)
    for line, headers in proxy.headers:
        assert "x-registry-config" not in headers, line
        sent = headers.get("x-registry-auth", "")
        assert "hunter2" not in base64.urlsafe_b64decode(sent + "=" * (-len(sent) % 4)).decode(errors="replace"), line


def test_a_cancelled_build_is_dropped_by_the_engine_at_once(
    image_tag: str, tmp_path: Path, docker_engine: docker.DockerClient
) -> None:
    marker = f"slow-step-{uuid.uuid4().hex[:8]}"
    repo = make_repo(tmp_path / "repo", f"FROM {HTTP_AGENT}\nRUN echo {marker} && sleep 30\n")
    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15))
    cancel = Cancellation()

    def on_output(line: str) -> None:
        if line == marker:
            threading.Timer(0.2, cancel.cancel).start()

    spec = BuildSpec(git_url=str(repo), branch="feature/agent", tag=image_tag, allow_local=True)
    started = time.monotonic()
    try:
        with pytest.raises(BuildCancelled) as cancelled:
            runner.build_image(spec, on_output=on_output, cancel=cancel)
    finally:
        runner.close()

    assert time.monotonic() - started < 15, "cancelled while the step sleeps 30 s"
    assert marker in cancelled.value.log
    with pytest.raises(docker.errors.ImageNotFound):
        docker_engine.images.get(image_tag)
    wait_for(
        lambda: build_steps(docker_engine, marker) == [],
        what="the cancelled build's container to be removed",
    )


def test_a_repository_larger_than_the_cap_is_not_built(image_tag: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", f"FROM {HTTP_AGENT}\nCOPY blob /blob\n", files={"blob": ""})
    (repo / "blob").write_bytes(os.urandom(3 * 1024 * 1024))  # random: git cannot compress it below the cap
    git(repo, "commit", "-qam", "a large file")
    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15, git_max_repo_mb=2))
    try:
        with pytest.raises(BuildFailed, match=r"larger than 2 MB \(GIT_MAX_REPO_MB\)"):
            build(runner, repo, image_tag)
    finally:
        runner.close()
