"""Jobs on the real engine: agents that run to completion, on both runners (containers, and Swarm services
whose tasks complete with the restart condition `on-failure`, or `none` for `never`).

`deploy-test/crasher` prints a line on stdout and one on stderr, then exits with `EXIT_CODE` after
`CRASH_DELAY` seconds: the exit code a job's replica ends with is the agent's env. The engine's fixtures and
helpers are those of test_deployments_engine (each test a reconciler loop and an engine namespace of its own).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest
from flask import Flask

from deploy_service.settings import Settings
from tests.integration.test_deployments_engine import (
    BOTH_RUNNERS,
    SETTINGS,
    Client,
    Engine,
    _engine,
    api,
    engine,
    status_is,
    wait_until,
)

__all__ = ["api", "engine"]  # fixtures, used by name
SLOW_PASSES = replace(SETTINGS, tick=30.0, resync=30.0, sample_every=30.0)
"""Passes due only every 30 s: whatever happens sooner was woken by the engine's own events."""


@pytest.fixture(params=["docker", "swarm"])
def slow_engine(
    request: pytest.FixtureRequest,
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[Engine]:
    """The `engine` fixture's runners, with a reconciler whose passes are due only every 30 s."""
    yield from _engine(request, request.param, docker_engine, app, monkeypatch, configure, SLOW_PASSES)


CRASHER = "deploy-test/crasher:latest"


def _job(api: Client, *, exit_code: int, delay: float = 0.3, **fields: Any) -> str:
    env = {"EXIT_CODE": str(exit_code), "CRASH_DELAY": str(delay)}
    return api.agent(image=CRASHER, kind="job", env=env, **fields)


def _ended(api: Client, deployment_id: str, timeout: float = 60.0) -> dict[str, Any]:
    wait_until(status_is(api, deployment_id, "succeeded", "failed"), timeout=timeout, what="the job's end")
    return api.deployment(deployment_id)


def _gone(engine: Engine, deployment_id: str) -> None:
    """No container of the deployment is left (Swarm: its service is removed too)."""
    wait_until(lambda: not engine.containers(deployment_id), what="containers removed")
    if engine.runner == "swarm":
        services = engine.client.api.services(filters={"label": f"deploy-service.deployment={deployment_id}"})
        assert services == []


def _stored_lines(api: Client, deployment_id: str) -> list[str]:
    body = api.call("get", f"/v1/deployments/{deployment_id}/logs?tail=100").get_json()
    return [line["line"] for line in body["lines"]]


def _git_repo(path: Path, dockerfile: str) -> tuple[str, str]:
    """A local git repository holding `dockerfile`: its file:// URL and its head commit."""
    path.mkdir()
    (path / "Dockerfile").write_text(dockerfile)
    git = ["git", "-C", str(path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "job"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return f"file://{path}", head


@BOTH_RUNNERS
def test_a_job_from_a_local_git_repository_succeeds_with_its_commit_build_log_and_logs(
    api: Client, engine: Engine, tmp_path: Path
) -> None:
    url, head = _git_repo(tmp_path / "repo", f"FROM {CRASHER}\nENV EXIT_CODE=0 CRASH_DELAY=0.5\n")
    agent_id = api.agent(image=None, source={"git_url": url, "branch": "main"}, kind="job")
    deployment_id = api.deploy(agent_id, replicas=2)
    body = _ended(api, deployment_id, timeout=90)
    assert body["status"] == "succeeded", body["error"]
    assert body["ended_at"] is not None and body["error"] is None
    assert [(i["status"], i["exit_code"]) for i in body["instances"]] == [("succeeded", 0), ("succeeded", 0)]
    assert len(api.events(deployment_id, "replica_succeeded")) == 2
    assert api.events(deployment_id, "restart_backoff") == []
    release = api.call("get", f"/v1/deployments/{deployment_id}/releases/1").get_json()
    assert release["source"] == {"git_url": url, "branch": "main", "commit": head}
    assert release["status"] == "active"
    build = api.call("get", f"/v1/deployments/{deployment_id}/logs?source=build&tail=1000").get_json()["lines"]
    assert any(line["line"].startswith("Step 1/") for line in build)
    _gone(engine, deployment_id)
    assert "crasher: starting up (stdout)" in _stored_lines(api, deployment_id)  # kept after the containers went
    assert api.call("get", f"/v1/agents/{agent_id}").get_json()["status"] == "stopped"


@BOTH_RUNNERS
def test_a_failing_job_with_restart_policy_never_fails_at_its_first_exit(api: Client, engine: Engine) -> None:
    deployment_id = api.deploy(_job(api, exit_code=4, restart_policy="never"))
    body = _ended(api, deployment_id)
    assert body["status"] == "failed"
    assert "code 4" in body["error"] and "never" in body["error"], body["error"]
    assert [(i["status"], i["exit_code"]) for i in body["instances"]] == [("failed", 4)]
    assert api.events(deployment_id, "restart_backoff") == []
    assert len(api.events(deployment_id, "container_exited")) == 1
    _gone(engine, deployment_id)


@BOTH_RUNNERS
def test_a_failing_job_on_failure_is_retried_within_the_budget_then_fails_with_its_exit_code(
    api: Client, engine: Engine
) -> None:
    deployment_id = api.deploy(_job(api, exit_code=5))
    body = _ended(api, deployment_id)
    assert body["status"] == "failed"
    assert "exit code 5" in body["error"] and f"restart budget of {SETTINGS.restart_budget}" in body["error"]
    retries = api.events(deployment_id, "restart_backoff")
    assert sorted(event["data"]["attempt"] for event in retries) == list(range(1, SETTINGS.restart_budget + 1))
    assert [e["data"]["exit_code"] for e in api.events(deployment_id, "container_exited")] == [5] * (
        SETTINGS.restart_budget + 1
    )
    assert body["instances"][0]["status"] == "failed" and body["instances"][0]["exit_code"] == 5
    _gone(engine, deployment_id)


@BOTH_RUNNERS
def test_a_job_over_its_timeout_fails_and_its_containers_are_stopped(api: Client, engine: Engine) -> None:
    deployment_id = api.deploy(_job(api, exit_code=0, delay=60, timeout_seconds=3))
    wait_until(lambda: engine.containers(deployment_id), what="the job runs")
    body = _ended(api, deployment_id, timeout=30)
    assert body["status"] == "failed"
    assert "timeout of 3s" in body["error"], body["error"]
    assert len(api.events(deployment_id, "job_timed_out")) == 1
    _gone(engine, deployment_id)


@BOTH_RUNNERS
def test_a_job_runs_again_with_restart(api: Client, engine: Engine) -> None:
    agent_id = _job(api, exit_code=0)
    deployment_id = api.deploy(agent_id)
    assert _ended(api, deployment_id)["status"] == "succeeded"
    _gone(engine, deployment_id)
    again = api.call("post", f"/v1/deployments/{deployment_id}/restart")
    assert again.status_code == 202, again.get_json()
    assert again.get_json()["status"] == "deploying"
    body = _ended(api, deployment_id)
    assert body["status"] == "succeeded", body["error"]
    assert len(api.events(deployment_id, "replica_succeeded")) == 2  # one per run
    assert api.call("get", f"/v1/deployments/{deployment_id}/releases").get_json()["total"] == 1
    _gone(engine, deployment_id)
    assert _stored_lines(api, deployment_id).count("crasher: starting up (stdout)") == 2


def test_a_job_that_ends_wakes_the_reconciler_at_once(api: Client, slow_engine: Engine) -> None:
    """The exit is seen through the engine's `die` event, not by a pass that was due anyway (30 s away)."""
    deployment_id = api.deploy(_job(api, exit_code=0, delay=1))
    wait_until(lambda: slow_engine.containers(deployment_id), timeout=20, what="the job runs")
    started = time.monotonic()
    body = _ended(api, deployment_id, timeout=20)
    assert body["status"] == "succeeded", body["error"]
    assert time.monotonic() - started < 10
