"""Fixtures for the tests that drive a real container engine.

They need the engine that `scripts/ensure_docker.sh` starts (the environment's `DOCKER_HOST`, or the
local socket) and the test images of `tests/integration/images/`, which the session builds once with
`build.sh` (it skips up-to-date images). An engine that does not answer fails the session, because
these tests are part of the suite; `DEPLOY_SERVICE_SKIP_ENGINE_TESTS=1` skips them instead.

Each test gets its own deployment-id prefix; after the test every managed container whose deployment
label starts with it is removed, so tests never touch containers they did not create.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from deploy_service.runner import LABEL_DEPLOYMENT, LABEL_MANAGED, DockerRunner
from deploy_service.runner.settings import RunnerSettings

IMAGES_DIR = Path(__file__).parent / "images"
ENSURE_DOCKER = Path(__file__).parents[2] / "scripts" / "ensure_docker.sh"


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    """A client of the engine under test, after the test images are built."""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        message = f"The container engine does not answer ({exc}); start it with {ENSURE_DOCKER}."
        if os.environ.get("DEPLOY_SERVICE_SKIP_ENGINE_TESTS") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    build = subprocess.run([str(IMAGES_DIR / "build.sh")], capture_output=True, text=True, timeout=300, check=False)
    if build.returncode != 0:
        pytest.fail(f"building the test images failed:\n{build.stderr}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def swarm_manager(docker_engine: docker.DockerClient) -> Iterator[None]:
    """The engine as a single-node Swarm manager: initialised here if it is not one, and left afterwards
    only if this session initialised it (scripts/test.sh does the same around the whole run)."""
    state = docker_engine.info().get("Swarm") or {}
    initialised = False
    if state.get("LocalNodeState") != "active":
        docker_engine.swarm.init(advertise_addr="127.0.0.1")
        initialised = True
    elif not state.get("ControlAvailable"):
        pytest.fail("The engine is a Swarm worker, not a manager; the swarm tests need a manager.", pytrace=False)
    yield
    if initialised:
        docker_engine.swarm.leave(force=True)


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def free_port() -> Callable[[], int]:
    """Returns a function giving a port that was free on 127.0.0.1 a moment ago."""
    return _free_port
