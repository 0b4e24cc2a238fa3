"""Releases on the real engine: a release runs the image id of its first start, whatever its tag names later;
a rolling update to another version answers every call meanwhile; a rollback runs the chosen release's image;
a crashing update rolls back by itself. The engine's fixtures and helpers are those of test_deployments_engine.

`CallsInALoop` calls `interact` through the service (with the agent's API key) on a thread of its own while a
rollout runs: the http agent answers its `AGENT_VERSION` (`second_version` is 2, the base image 1), so a test sees
which release answered each call.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import TracebackType
from typing import Any

import docker
import pytest
from flask import Flask

from deploy_service.runner.base import LABEL_GENERATION
from deploy_service.settings import Settings
from tests.integration.test_deployments_engine import (
    BOTH_RUNNERS,
    FAST_HEALTH,
    HTTP_AGENT,
    SETTINGS,
    Client,
    Engine,
    _engine,
    api,
    engine,
    second_version,
    status_is,
    wait_until,
)

__all__ = ["api", "engine", "second_version"]  # fixtures, used by name


class CallsInALoop:
    """`interact` called through the service with the agent's API key, in a loop on a thread, until the block ends.

    `answers` holds `(status code, the answering version or None)` per call, in order.
    """

    def __init__(self, app: Flask, api: Client, agent_id: str) -> None:
        created = api.call("post", f"/v1/agents/{agent_id}/api-key", {"name": f"loop-{uuid.uuid4().hex[:6]}"})
        assert created.status_code == 201, created.get_json()
        self.app, self.url, self.headers = (
            app,
            f"/v1/agents/{agent_id}/interact",
            {"X-API-Key": created.get_json()["key"]},
        )
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="interact-loop")

    def _loop(self) -> None:
        client = self.app.test_client()
        while not self._stop.is_set():
            response = client.post(self.url, headers=self.headers, json={"n": len(self.answers)})
            body = response.get_json(silent=True) or {}
            self.answers.append((response.status_code, body.get("version") if response.status_code == 200 else None))

    def __enter__(self) -> CallsInALoop:
        self._thread.start()
        wait_until(lambda: self.answers, what="a first call answered")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def failed(self) -> list[int]:
        return [status for status, _ in self.answers if status != 200]

    def versions(self) -> set[str | None]:
        return {version for status, version in self.answers if status == 200}

    def answered(self, version: str) -> bool:
        return any(answer == (200, version) for answer in list(self.answers))

    def calls_since(self, count: int) -> int:
        return len(self.answers) - count


def releases(api: Client, deployment_id: str) -> list[tuple[int, str]]:
    items = api.call("get", f"/v1/deployments/{deployment_id}/releases").get_json()["items"]
    return [(item["number"], item["status"]) for item in items]


def release(api: Client, deployment_id: str, number: int) -> dict[str, Any]:
    body: dict[str, Any] = api.call("get", f"/v1/deployments/{deployment_id}/releases/{number}").get_json()
    return body


def images_run(engine: Engine, deployment_id: str) -> set[str]:
    """The image ids the deployment's live containers run (one removed between the list and its inspect is
    skipped: Swarm removes old tasks' containers as it goes)."""
    found = set()
    for container in engine.containers(deployment_id):
        try:
            found.add(engine.inspect(container.id).attrs["Image"])
        except docker.errors.NotFound:
            continue
    return found


@pytest.fixture()
def moving_tag(docker_engine: docker.DockerClient) -> Iterator[str]:
    """A tag of this test's own naming the http agent's image (the test moves it); untagged afterwards."""
    repository, tag = f"deploy-test/moving-{uuid.uuid4().hex[:8]}", "current"
    docker_engine.images.get(HTTP_AGENT).tag(repository, tag)
    yield f"{repository}:{tag}"
    try:
        docker_engine.images.remove(f"{repository}:{tag}")
    except docker.errors.ImageNotFound:
        pass


def test_a_release_keeps_running_its_image_id_after_its_tag_moved_and_a_rollback_runs_it_again(
    api: Client, engine: Engine, moving_tag: str, second_version: str
) -> None:
    first_id = engine.client.images.get(HTTP_AGENT).id
    second_id = engine.client.images.get(second_version).id
    deployment_id = api.deploy(api.agent(image=moving_tag, health_check=FAST_HEALTH))
    wait_until(status_is(api, deployment_id, "ready"), what="ready")

    def release(number: int) -> dict[str, object]:
        body: dict[str, object] = api.call("get", f"/v1/deployments/{deployment_id}/releases/{number}").get_json()
        return body

    def images_run() -> set[str]:
        return {engine.inspect(c.id).attrs["Image"] for c in engine.containers(deployment_id)}

    assert release(1)["image_id"] == first_id

    # The tag moves to another image: a scale-up and a replica recreated by hand still run release 1's.
    repository, tag = moving_tag.rsplit(":", 1)
    engine.client.images.get(second_version).tag(repository, tag)
    assert engine.client.images.get(moving_tag).id == second_id
    assert api.call("post", f"/v1/deployments/{deployment_id}/scale", {"replicas": 2}).status_code == 202
    wait_until(lambda: api.deployment(deployment_id)["replicas"]["ready"] == 2, what="two ready")
    [first, _] = sorted(engine.containers(deployment_id), key=lambda c: c.replica)
    engine.client.api.remove_container(first.id, force=True)
    wait_until(
        lambda: any(
            c.replica == 0 and c.id != first.id and c.status == "running" for c in engine.containers(deployment_id)
        ),
        what="replica 0 recreated",
    )
    wait_until(lambda: api.deployment(deployment_id)["replicas"]["ready"] == 2, what="two ready again")
    assert images_run() == {first_id}

    # A restart now runs another image: release 2, pinned to it. A rollback runs release 1's image again.
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").status_code == 202
    wait_until(lambda: release(2).get("status") == "active", timeout=60, what="release 2 active")
    wait_until(lambda: images_run() == {second_id}, what="release 2's image")
    assert release(2)["image_id"] == second_id and release(2)["reason"] == "restart"
    assert api.call("post", f"/v1/deployments/{deployment_id}/rollback", {}).status_code == 202
    wait_until(lambda: release(3).get("status") == "active", timeout=60, what="release 3 active")
    wait_until(lambda: images_run() == {first_id}, what="release 1's image again")
    assert release(3)["image_id"] == first_id and engine.client.images.get(moving_tag).id == second_id


@BOTH_RUNNERS
def test_a_rolling_update_to_version_2_answers_every_call_and_both_versions_answer_meanwhile(
    app: Flask, api: Client, engine: Engine, second_version: str
) -> None:
    second_id = engine.client.images.get(second_version).id
    agent_id = api.agent(health_check=FAST_HEALTH)
    deployment_id = api.deploy(agent_id, replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    with CallsInALoop(app, api, agent_id) as loop:
        patched = api.call("patch", f"/v1/agents/{agent_id}", {"image": second_version})
        assert patched.status_code == 200, patched.get_json()
        before = len(loop.answers)
        restarted = api.call("post", f"/v1/deployments/{deployment_id}/restart")
        assert restarted.status_code == 202 and restarted.get_json()["revision"] == 2, restarted.get_json()

        def rolled_out() -> bool:
            return (
                releases(api, deployment_id) == [(2, "active"), (1, "superseded")]
                and images_run(engine, deployment_id) == {second_id}
                and api.deployment(deployment_id)["status"] == "ready"
            )

        wait_until(rolled_out, timeout=60, what="release 2 active on every replica")
        done = len(loop.answers)
        wait_until(lambda: loop.calls_since(done) >= 20, what="calls after the rollout")
    during = loop.answers[before:done]
    assert not loop.failed(), f"{len(loop.failed())} failed calls of {len(loop.answers)}: {set(loop.failed())}"
    assert {version for _, version in during} == {"1", "2"}, "both versions answer while the update runs"
    assert {version for _, version in loop.answers[done:]} == {"2"}
    body = api.deployment(deployment_id)
    assert body["revision"] == 2 and body["image"] == second_version
    assert body["replicas"] == {"desired": 2, "running": 2, "ready": 2}


@BOTH_RUNNERS
def test_a_rollback_to_a_chosen_older_release_runs_that_releases_image_and_config(
    app: Flask, api: Client, engine: Engine, second_version: str
) -> None:
    first_id = engine.client.images.get(HTTP_AGENT).id
    second_id = engine.client.images.get(second_version).id
    agent_id = api.agent(health_check=FAST_HEALTH)
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")

    def env_run() -> list[set[str]]:
        found = []
        for container in engine.containers(deployment_id):
            try:
                found.append(set(engine.inspect(container.id).attrs["Config"]["Env"]))
            except docker.errors.NotFound:  # removed since the list
                continue
        return found

    # Release 2: another image; release 3: the same image with another setting.
    assert api.call("patch", f"/v1/agents/{agent_id}", {"image": second_version}).status_code == 200
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").get_json()["revision"] == 2
    wait_until(lambda: releases(api, deployment_id)[0] == (2, "active"), timeout=60, what="release 2 active")
    assert api.call("patch", f"/v1/agents/{agent_id}", {"env": {"MODE": "three"}}).status_code == 200
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").get_json()["revision"] == 3
    wait_until(
        lambda: releases(api, deployment_id) == [(3, "active"), (2, "superseded"), (1, "superseded")],
        timeout=60,
        what="release 3 active",
    )
    wait_until(lambda: images_run(engine, deployment_id) == {second_id}, what="release 3's image")
    wait_until(lambda: all("MODE=three" in env for env in env_run()), what="release 3's setting")

    response = api.call("post", f"/v1/deployments/{deployment_id}/rollback", {"release": 1})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["revision"] == 4 and response.get_json()["image"] == HTTP_AGENT
    wait_until(
        lambda: (
            releases(api, deployment_id) == [(4, "active"), (3, "rolled_back"), (2, "superseded"), (1, "superseded")]
        ),
        timeout=60,
        what="release 4 (release 1 again) active",
    )
    wait_until(lambda: images_run(engine, deployment_id) == {first_id}, what="release 1's image id")
    wait_until(status_is(api, deployment_id, "ready"), what="ready on release 4")
    assert not any(any(line.startswith("MODE=") for line in env) for env in env_run()), "release 1 had no MODE"
    fourth = release(api, deployment_id, 4)
    assert fourth["reason"] == "rollback" and fourth["rollback_of"] == 1
    assert fourth["image"] == HTTP_AGENT and fourth["image_id"] == first_id
    assert fourth["config"] == release(api, deployment_id, 1)["config"]
    with CallsInALoop(app, api, agent_id) as loop:
        wait_until(lambda: len(loop.answers) >= 3, what="three calls")
    assert loop.versions() == {"1"} and not loop.failed()


@pytest.mark.parametrize("engine", ["docker", "swarm"], indirect=True)
def test_a_crashing_update_rolls_back_automatically_with_no_failed_call(
    app: Flask, api: Client, engine: Engine
) -> None:
    """On Swarm the update pauses when its first new task crashes within the watch (`judged_after`): the slot it
    had not reached still serves, the replica that cannot be reached is passed over, and the old spec is applied
    again on ports of its own (its tasks are new containers of the old release, not the old ones kept)."""
    agent_id = api.agent(health_check=FAST_HEALTH)
    deployment_id = api.deploy(agent_id, replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    old = {c.id for c in engine.containers(deployment_id)}
    first_image = engine.client.images.get(HTTP_AGENT).id

    def only_the_old_release() -> bool:
        if engine.runner == "docker":
            return {c.id for c in engine.containers(deployment_id)} == old
        return len(engine.containers(deployment_id)) == 2 and images_run(engine, deployment_id) == {first_image}

    with CallsInALoop(app, api, agent_id) as loop:
        patched = api.call("patch", f"/v1/agents/{agent_id}", {"image": "deploy-test/crasher:latest"})
        assert patched.status_code == 200, patched.get_json()
        restarted = api.call("post", f"/v1/deployments/{deployment_id}/restart").get_json()
        assert restarted["revision"] == 2
        failed_generation = restarted["generation"]
        wait_until(lambda: api.events(deployment_id, "rolled_back"), timeout=60, what="the automatic rollback")
        wait_until(status_is(api, deployment_id, "ready"), what="ready again")
        wait_until(only_the_old_release, what="only the old release's replicas")
        done = len(loop.answers)
        wait_until(lambda: loop.calls_since(done) >= 20, what="calls after the rollback")
    assert not loop.failed(), f"{len(loop.failed())} failed calls of {len(loop.answers)}: {set(loop.failed())}"
    assert loop.versions() == {"1"}
    body = api.deployment(deployment_id)
    assert body["revision"] == 1 and body["status"] == "ready" and body["image"] == HTTP_AGENT
    assert releases(api, deployment_id) == [(2, "failed"), (1, "active")]
    failed = release(api, deployment_id, 2)
    # Whichever saw it first: our restart budget, or Swarm's update watch (it paused the update).
    assert ("kept crashing" in failed["error"] or "Rolling update failed" in failed["error"]) and failed["ended_at"]
    assert body["generation"] < failed_generation
    [rollout_failed] = api.events(deployment_id, "rollout_failed")
    assert rollout_failed["data"]["number"] == 2 and rollout_failed["data"]["error"] == failed["error"]
    [rolled_back] = api.events(deployment_id, "rolled_back")
    assert rolled_back["data"]["from"] == 2 and rolled_back["data"]["to"] == 1 and rolled_back["data"]["automatic"]
    alerts = api.call("get", f"/v1/alerts?deployment_id={deployment_id}").get_json()["items"]
    assert [(a["kind"], a["severity"]) for a in alerts if a["status"] == "active"] == [("rollout_failed", "warning")]

    # The next restart rolls out a generation never used before (not the failed one's number again, whose
    # replica names a failed container the engine kept would be adopted by).
    patched = api.call("patch", f"/v1/agents/{agent_id}", {"image": HTTP_AGENT})
    assert patched.status_code == 200, patched.get_json()
    again = api.call("post", f"/v1/deployments/{deployment_id}/restart").get_json()
    assert again["revision"] == 1, "release 1's settings again: its replicas are replaced"
    assert again["generation"] > failed_generation

    def fresh_replicas_only() -> bool:
        containers = engine.containers(deployment_id)
        generations = {int(c.labels[LABEL_GENERATION]) for c in containers}
        return len(containers) == 2 and generations == {again["generation"]} and not {c.id for c in containers} & old

    wait_until(fresh_replicas_only, timeout=60, what="two replicas of the new generation")
    wait_until(status_is(api, deployment_id, "ready"), what="ready on the new generation")


@pytest.mark.parametrize("engine", ["swarm"], indirect=True)
def test_on_swarm_a_crashing_update_goes_back_to_the_old_release_and_keeps_its_service(
    app: Flask, api: Client, engine: Engine
) -> None:
    agent_id = api.agent(health_check=FAST_HEALTH)
    deployment_id = api.deploy(agent_id, replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    first_image = engine.client.images.get(HTTP_AGENT).id
    patched = api.call("patch", f"/v1/agents/{agent_id}", {"image": "deploy-test/crasher:latest"})
    assert patched.status_code == 200, patched.get_json()
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").get_json()["revision"] == 2
    wait_until(lambda: api.events(deployment_id, "rolled_back"), timeout=90, what="the automatic rollback")
    wait_until(status_is(api, deployment_id, "ready"), timeout=60, what="ready again")

    def old_release_runs() -> bool:
        return len(engine.containers(deployment_id)) == 2 and images_run(engine, deployment_id) == {first_image}

    wait_until(old_release_runs, timeout=60, what="two replicas of release 1's image")
    body = api.deployment(deployment_id)
    assert body["revision"] == 1 and body["status"] == "ready" and body["image"] == HTTP_AGENT
    assert releases(api, deployment_id) == [(2, "failed"), (1, "active")]
    failed = release(api, deployment_id, 2)
    # Whichever saw it first: our restart budget, or Swarm's update watch (it pauses the update: FailureAction).
    assert "kept crashing" in failed["error"] or "Rolling update failed" in failed["error"], failed["error"]
    assert api.events(deployment_id, "rollout_failed") and not api.events(deployment_id, "service_removed")
    with CallsInALoop(app, api, agent_id) as loop:
        wait_until(lambda: loop.calls_since(0) >= 20, what="calls after the rollback")
    assert not loop.failed() and loop.versions() == {"1"}


@pytest.fixture()
def surging_engine(
    request: pytest.FixtureRequest,
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[Engine]:
    """The docker runner with `ROLLOUT_MAX_SURGE=2`."""
    yield from _engine(request, "docker", docker_engine, app, monkeypatch, configure, replace(SETTINGS, max_surge=2))


def test_a_surge_of_two_replaces_two_replicas_at_once_and_answers_every_call(
    app: Flask, api: Client, surging_engine: Engine, second_version: str
) -> None:
    engine = surging_engine
    second_id = engine.client.images.get(second_version).id
    agent_id = api.agent(health_check=FAST_HEALTH)
    deployment_id = api.deploy(agent_id, replicas=3)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    most = [0]
    with CallsInALoop(app, api, agent_id) as loop:
        assert api.call("patch", f"/v1/agents/{agent_id}", {"image": second_version}).status_code == 200
        assert api.call("post", f"/v1/deployments/{deployment_id}/restart").status_code == 202

        def rolled_out() -> bool:
            most[0] = max(most[0], len([c for c in engine.containers(deployment_id) if c.status == "running"]))
            return (
                releases(api, deployment_id) == [(2, "active"), (1, "superseded")]
                and images_run(engine, deployment_id) == {second_id}
                and api.deployment(deployment_id)["status"] == "ready"
            )

        wait_until(rolled_out, timeout=60, what="release 2 active on every replica")
    assert not loop.failed(), f"{len(loop.failed())} failed calls of {len(loop.answers)}: {set(loop.failed())}"
    assert most[0] <= 5, "never more than desired + 2"
    starts = sorted(e["created_at"] for e in api.events(deployment_id, "container_started"))[-3:]
    replaced = sorted(e["created_at"] for e in api.events(deployment_id, "replica_replaced"))
    assert len(replaced) == 3 and starts[1] < replaced[0], "two replicas started before the first old one went"
