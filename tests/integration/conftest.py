"""Fixtures for the tests that drive a real container engine.

They need the engine that `scripts/ensure_docker.sh` starts (the environment's `DOCKER_HOST`, or the
local socket) and the test images of `tests/integration/images/`, which the session builds once with
`build.sh` (it skips up-to-date images). An engine that does not answer fails the session, because
these tests are part of the suite; `DEPLOY_SERVICE_SKIP_ENGINE_TESTS=1` skips them instead.

`docker_engine` and `swarm_manager` are in tests/conftest.py (tests/faults uses them too).

Each test gets its own deployment-id prefix; after the test every managed container whose deployment
label starts with it is removed, so tests never touch containers they did not create.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import docker
import pytest

from deploy_service.runner import LABEL_DEPLOYMENT, LABEL_MANAGED, DockerRunner
from deploy_service.runner.settings import RunnerSettings
from tests import helpers


@pytest.fixture()
def deployment_prefix() -> str:
    """A deployment id unique to this test; the test's containers carry it (or ids starting with it)."""
    return f"it{uuid.uuid4().hex[:12]}"


def remove_containers(client: docker.DockerClient, prefix: str) -> None:
    """Remove every managed container (in any namespace) whose deployment label starts with `prefix`."""
    for row in client.api.containers(all=True, filters={"label": LABEL_MANAGED}):  # no inspect: no race
        if (row.get("Labels") or {}).get(LABEL_DEPLOYMENT, "").startswith(prefix):
            try:
                client.api.remove_container(row["Id"], force=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture()
def runner(docker_engine: docker.DockerClient, deployment_prefix: str) -> Iterator[DockerRunner]:
    """A DockerRunner with host networking forced (the test engine has no bridge network)."""
    runner = DockerRunner(RunnerSettings(network_mode="host", docker_timeout=15))
    yield runner
    runner.close()
    remove_containers(docker_engine, deployment_prefix)


@pytest.fixture()
def image_tag(docker_engine: docker.DockerClient, deployment_prefix: str) -> Iterator[str]:
    """An image tag unique to this test; its containers, then the image, are removed afterwards."""
    tag = f"deploy-test/built-{deployment_prefix}:latest"
    yield tag
    remove_containers(docker_engine, deployment_prefix)
    try:
        docker_engine.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


@pytest.fixture()
def free_port() -> Callable[[], int]:
    """Returns a function giving a port that was free on 127.0.0.1 a moment ago."""
    return helpers.free_port
