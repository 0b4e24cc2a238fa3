"""Images of git releases on the real engine (Docker runner): a rollback runs the release's own image while
the engine has it, older release images are removed past `RELEASE_IMAGES_KEPT`, and a rollback to a release
whose image was removed builds its recorded commit again, never the branch's head. The engine's fixtures and
helpers are those of test_deployments_engine."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest
from flask import Flask

from deploy_service.settings import Settings
from tests.integration.test_deployments_engine import (
    FAST_HEALTH,
    HTTP_AGENT,
    SETTINGS,
    Client,
    Engine,
    _engine,
    api,
    status_is,
    wait_until,
)

__all__ = ["api"]  # a fixture, used by name


@pytest.fixture()
def engine(
    request: pytest.FixtureRequest,
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[Engine]:
    """The docker runner with a reconciler that keeps the images of the newest release only."""
    yield from _engine(
        request, "docker", docker_engine, app, monkeypatch, configure, replace(SETTINGS, release_images_kept=1)
    )


@pytest.fixture()
def built_images(docker_engine: docker.DockerClient) -> Iterator[list[str]]:
    """Agent ids whose built images (`deploy-service/agent-<id>:*`) are removed after the test."""
    agents: list[str] = []
    yield agents
    for agent_id in agents:
        for image in docker_engine.images.list(name=f"deploy-service/agent-{agent_id}"):
            for tag in image.tags:
                try:
                    docker_engine.images.remove(tag, force=True)
                except docker.errors.ImageNotFound:
                    pass


class Repo:
    """A local git repository whose Dockerfile says which version it is (`AGENT_VERSION`); a label of its
    own makes its images this test's alone (no other build's cached image shares their ids)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = uuid.uuid4().hex
        self.git = ["git", "-C", str(path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)

    def commit(self, version: int) -> str:
        (self.path / "Dockerfile").write_text(
            f"FROM {HTTP_AGENT}\nLABEL test-repo={self.label}\nENV AGENT_VERSION={version}\n"
        )
        subprocess.run([*self.git, "add", "."], check=True)
        subprocess.run([*self.git, "commit", "-qm", f"version {version}"], check=True)
        return subprocess.run(
            [*self.git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()


def _version_running(api: Client, engine: Engine, deployment_id: str) -> set[str]:
    """The `AGENT_VERSION` of every running replica, read from its container's environment."""
    found = set()
    for container in engine.containers(deployment_id):
        if container.status != "running":
            continue
        try:
            env = engine.inspect(container.id).attrs["Config"]["Env"]
        except docker.errors.NotFound:  # removed since the list
            continue
        found |= {item.split("=", 1)[1] for item in env if item.startswith("AGENT_VERSION=")}
    return found


def test_a_git_rollback_past_the_kept_images_builds_its_own_commit_again(
    built_images: list[str], api: Client, engine: Engine, docker_engine: docker.DockerClient, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "repo")
    commits = {1: repo.commit(1)}
    agent_id = api.agent(
        image=None, source={"git_url": f"file://{repo.path}", "branch": "main"}, health_check=FAST_HEALTH
    )
    built_images.append(agent_id)
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "ready"), timeout=90, what="release 1 built and ready")

    def release(number: int) -> dict[str, Any]:
        body: dict[str, Any] = api.call("get", f"/v1/deployments/{deployment_id}/releases/{number}").get_json()
        return body

    def active(number: int) -> Callable[[], bool]:
        def check() -> bool:
            # A restart's release is added once its moved branch is found: 404 until then.
            return release(number).get("status") == "active" and api.deployment(deployment_id)["status"] == "ready"

        return check

    for version in (2, 3):
        commits[version] = repo.commit(version)
        assert api.call("post", f"/v1/deployments/{deployment_id}/restart").status_code == 202
        wait_until(active(version), timeout=90, what=f"release {version} active")
        wait_until(lambda v=version: _version_running(api, engine, deployment_id) == {str(v)}, what="only it runs")
    first = release(1)
    assert first["source"]["commit"] == commits[1]
    # Release 1's image went after release 3's build (release 2's stayed: it was the active release then).
    removed = [e["data"]["images"] for e in api.events(deployment_id, "images_removed")]
    assert [first["image"]] in removed
    with pytest.raises(docker.errors.ImageNotFound):
        docker_engine.images.get(first["image_id"])

    # The branch's head is version 4 now: the rollback still builds release 1's commit.
    repo.commit(4)
    response = api.call("post", f"/v1/deployments/{deployment_id}/rollback", {"release": 1})
    assert response.status_code == 202, response.get_json()
    wait_until(active(4), timeout=90, what="release 4 (back to 1) active")
    wait_until(lambda: _version_running(api, engine, deployment_id) == {"1"}, what="version 1 running again")
    fourth = release(4)
    assert fourth["rollback_of"] == 1 and fourth["source"]["commit"] == commits[1]
    [started] = [e for e in api.events(deployment_id, "build_started") if e["data"].get("commit")]
    assert commits[1] in started["message"]


def test_a_git_rollback_to_an_image_still_on_the_engine_runs_it_without_a_build(
    built_images: list[str], api: Client, engine: Engine, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "repo")
    repo.commit(1)
    agent_id = api.agent(
        image=None, source={"git_url": f"file://{repo.path}", "branch": "main"}, health_check=FAST_HEALTH
    )
    built_images.append(agent_id)
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "ready"), timeout=90, what="release 1 ready")
    repo.commit(2)
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").status_code == 202
    wait_until(lambda: _version_running(api, engine, deployment_id) == {"2"}, timeout=90, what="version 2 only")
    # Release 1's image was still in use when release 2's build ended: it stayed (never removed by force).
    builds = len(api.events(deployment_id, "build_started"))

    assert api.call("post", f"/v1/deployments/{deployment_id}/rollback", {"release": 1}).status_code == 202
    wait_until(lambda: _version_running(api, engine, deployment_id) == {"1"}, timeout=60, what="version 1 again")
    assert len(api.events(deployment_id, "build_started")) == builds
    body = api.call("get", f"/v1/deployments/{deployment_id}/releases/3").get_json()
    first = api.call("get", f"/v1/deployments/{deployment_id}/releases/1").get_json()
    assert body["image_id"] == first["image_id"]


def test_a_git_restart_builds_only_when_its_branch_moved(
    built_images: list[str], api: Client, engine: Engine, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "repo")
    first = repo.commit(1)
    agent_id = api.agent(
        image=None, source={"git_url": f"file://{repo.path}", "branch": "main"}, health_check=FAST_HEALTH
    )
    built_images.append(agent_id)
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "ready"), timeout=90, what="release 1 ready")
    old = {c.id for c in engine.containers(deployment_id)}

    # Nothing moved: the repository is asked (git ls-remote), release 1's image runs again, nothing is built.
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").get_json()["revision"] == 1
    wait_until(
        lambda: (
            api.events(deployment_id, "replicas_replaced")
            and api.deployment(deployment_id)["status"] == "ready"
            and not {c.id for c in engine.containers(deployment_id)} & old
        ),
        timeout=60,
        what="release 1's replicas replaced",
    )
    assert len(api.events(deployment_id, "build_started")) == 1
    releases = api.call("get", f"/v1/deployments/{deployment_id}/releases").get_json()["items"]
    assert [(r["number"], r["status"], r["source"]["commit"]) for r in releases] == [(1, "active", first)]

    # The branch moved: its head is built as release 2.
    second = repo.commit(2)
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").status_code == 202
    wait_until(lambda: _version_running(api, engine, deployment_id) == {"2"}, timeout=90, what="version 2 only")
    wait_until(status_is(api, deployment_id, "ready"), what="ready on release 2")
    body = api.deployment(deployment_id)
    assert body["revision"] == 2
    release = api.call("get", f"/v1/deployments/{deployment_id}/releases/2").get_json()
    assert release["status"] == "active" and release["source"]["commit"] == second
    assert {"field": "source.commit", "from": first, "to": second} in release["changes"]
    [moved] = api.events(deployment_id, "branch_moved")
    assert moved["data"]["commit"] == second
