"""Releases on the real engine (Docker runner): a release runs the image id of its first start, whatever its
tag names later. The engine's fixtures and helpers are those of test_deployments_engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import docker
import pytest

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
