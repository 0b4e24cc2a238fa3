"""Releases on the real engine (Docker runner): a release runs the image id of its first start, whatever its
tag names later. The engine's fixtures and helpers are those of test_deployments_engine."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import docker
import pytest
from flask import Flask

from deploy_service.runner.base import LABEL_GENERATION
from tests.integration.test_deployments_engine import (
    FAST_HEALTH,
    HTTP_AGENT,
    Client,
    Engine,
    api,
    engine,
    second_version,
    status_is,
    wait_until,
)

__all__ = ["api", "engine", "second_version"]  # fixtures, used by name


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


def test_a_crashing_update_rolls_back_automatically_with_no_failed_call(
    app: Flask, api: Client, engine: Engine
) -> None:
    agent_id = api.agent(health_check=FAST_HEALTH)
    deployment_id = api.deploy(agent_id, replicas=2)
    wait_until(status_is(api, deployment_id, "ready"), what="ready")
    old = {c.id for c in engine.containers(deployment_id)}
    stop, answers = threading.Event(), []

    def call_in_a_loop() -> None:
        client = app.test_client()
        while not stop.is_set():
            answers.append(client.post(f"/v1/agents/{agent_id}/interact", headers=api.headers, json={}).status_code)

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    try:
        patched = api.call("patch", f"/v1/agents/{agent_id}", {"image": "deploy-test/crasher:latest"})
        assert patched.status_code == 200, patched.get_json()
        restarted = api.call("post", f"/v1/deployments/{deployment_id}/restart").get_json()
        assert restarted["revision"] == 2
        failed_generation = restarted["generation"]
        wait_until(lambda: api.events(deployment_id, "rolled_back"), timeout=60, what="the automatic rollback")
        wait_until(status_is(api, deployment_id, "ready"), what="ready again")
        wait_until(lambda: {c.id for c in engine.containers(deployment_id)} == old, what="only the old replicas")
    finally:
        stop.set()
        caller.join()
    assert answers and set(answers) == {200}, f"{len([a for a in answers if a != 200])} failed calls"
    body = api.deployment(deployment_id)
    assert body["revision"] == 1 and body["status"] == "ready" and body["image"] == HTTP_AGENT
    releases = api.call("get", f"/v1/deployments/{deployment_id}/releases").get_json()["items"]
    assert [(r["number"], r["status"]) for r in releases] == [(2, "failed"), (1, "active")]
    assert releases[0]["error"]
    assert body["generation"] < failed_generation

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
