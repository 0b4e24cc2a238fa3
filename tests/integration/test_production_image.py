"""The production image: the Dockerfile builds, and the container it makes serves as its non-root user.

No registry serves the Dockerfile's default base (python:3.11-slim) here, so the image is built on
`deploy-service-base:debian12`, a Debian 12 with Debian's python3 that scripts/ensure_base_image.sh
makes once and keeps. The image keeps its tag between runs, so the engine's layer cache makes a rerun
fast; the container is removed after the test. It runs with host networking on a free loopback port
(the test engine has no bridge) and the engine's socket mounted, as a deployment on one host would.

The `image` marker (from the `production_image` fixture) runs this in the SQLite run only: the image
runs its own SQLite database, so the PostgreSQL run would only build and start the same image again.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests.helpers import ROOT, free_port, wait_until

BASE_IMAGE = "deploy-service-base:debian12"
ENSURE_BASE_IMAGE = ROOT / "scripts" / "ensure_base_image.sh"
TAG = "deploy-service-test/production:latest"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
"""Certificates this machine trusts besides Debian's bundle (a TLS-inspecting proxy's): pip in the build needs them."""


def _local_ca_pem() -> str:
    return "".join(path.read_text() for path in sorted(LOCAL_CA_DIR.rglob("*.crt")))


def _engine_socket() -> Path:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.skip(f"the image test mounts the engine's socket; DOCKER_HOST={host} is not a local one")
    return Path(host.removeprefix("unix://"))


@pytest.fixture(scope="module")
def production_image(docker_engine: docker.DockerClient) -> str:
    """The Dockerfile built on the local Debian 12 base (made first when missing); returns its tag."""
    base = subprocess.run([str(ENSURE_BASE_IMAGE)], capture_output=True, text=True, timeout=900, check=False)
    if base.returncode != 0:
        pytest.fail(f"making {BASE_IMAGE} failed:\n{base.stderr}", pytrace=False)
    try:
        previous = docker_engine.images.get(TAG).id
    except docker.errors.ImageNotFound:
        previous = None
    log: list[str] = []
    for chunk in docker_engine.api.build(
        path=str(ROOT),
        tag=TAG,
        buildargs={"BASE": BASE_IMAGE, "EXTRA_CA_PEM": _local_ca_pem()},
        network_mode="host",  # the engine has no bridge; the build's pip install reaches the package index
        rm=True,
        forcerm=True,
        decode=True,
        timeout=600,
    ):
        log.append(chunk.get("stream", "") or chunk.get("status", ""))
        if "error" in chunk:
            pytest.fail(f"building the image failed: {chunk['error']}\n{''.join(log[-40:])}", pytrace=False)
    built = docker_engine.images.get(TAG).id
    if previous and previous != built:  # the last run's image, now untagged: drop what only it held
        try:
            docker_engine.images.remove(previous)
        except docker.errors.APIError:
            pass
    return TAG


@pytest.fixture()
def service_container(docker_engine: docker.DockerClient, production_image: str) -> Iterator[tuple[Any, str]]:
    """The image started as in production, serving on a free loopback port; removed after the test."""
    socket = _engine_socket()
    port = free_port()
    container = docker_engine.containers.run(
        production_image,
        detach=True,
        name=f"deploy-service-image-test-{uuid.uuid4().hex[:8]}",
        network_mode="host",
        environment={
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": "sqlite:////app/instance/deploy.db",
            "WEB_CONCURRENCY": "1",
            "REGISTRATION_ENABLED": "false",
            # Production refuses host networking unless told it is single-tenant (issue 14); this engine
            # has no bridge, so host is its only mode.
            "HOST_NETWORK_ALLOWED": "true",
        },
        volumes={str(socket): {"bind": "/var/run/docker.sock", "mode": "rw"}},
        group_add=[str(socket.stat().st_gid)],  # the socket's group, so the non-root user may open it
    )
    try:
        yield container, f"http://127.0.0.1:{port}"
    finally:
        container.remove(force=True)


def _get(container: Any, url: str) -> requests.Response | None:
    container.reload()
    if container.status != "running":
        logs = container.logs(tail=60).decode(errors="replace")
        raise AssertionError(f"the container stopped ({container.status}):\n{logs}")
    try:
        return requests.get(url, timeout=5)
    except (requests.ConnectionError, requests.Timeout):
        return None


def test_the_image_migrates_serves_and_runs_as_its_non_root_user(
    docker_engine: docker.DockerClient, service_container: tuple[Any, str]
) -> None:
    container, base = service_container

    health = wait_until(lambda: _get(container, f"{base}/health"), timeout=90, what="/health to answer")
    assert health.status_code == 200 and health.json()["status"] == "ok"

    def ready_answer() -> requests.Response | None:
        answer = _get(container, f"{base}/health/ready")
        return answer if answer is not None and answer.status_code == 200 else None

    ready = wait_until(ready_answer, timeout=30, what="/health/ready to be 200")
    checks = ready.json()["checks"]
    assert {name: check["status"] for name, check in checks.items()} == {
        "database": "ok",
        "migrations": "ok",  # serve.sh ran `flask db upgrade` before gunicorn started
        "engine": "ok",
        "reconciler": "ok",
    }

    # Render's reconciler worker runs `flask --app app reconcile` from the same image: it completes a pass.
    assert checks["reconciler"]["last_pass_at"] is None
    container.exec_run(["flask", "--app", "app", "reconcile"], detach=True)

    def reconciled() -> Any:
        answer = _get(container, f"{base}/health/ready")
        return answer is not None and answer.json()["checks"]["reconciler"]["last_pass_at"]

    wait_until(reconciled, timeout=60, what="the reconciler's first pass")

    # The image's HEALTHCHECK, run as the engine runs it: the venv's python reaches /health.
    probe = docker_engine.api.inspect_image(TAG)["Config"]["Healthcheck"]["Test"]
    assert probe[0] == "CMD-SHELL"
    code, output = container.exec_run(["/bin/sh", "-c", probe[1]])
    assert code == 0, output.decode(errors="replace")

    # Non-root: the image's user, `id -u` inside, and every process of the container as the host sees it.
    assert docker_engine.api.inspect_image(TAG)["Config"]["User"] == "app"
    code, uid = container.exec_run(["id", "-u"])
    assert code == 0 and int(uid) != 0
    top = docker_engine.api.top(container.id, ps_args="-o pid,uid,args")  # the engine needs the pid column
    uids = {row[1] for row in top["Processes"]}
    assert uids == {uid.decode().strip()}, top
    assert any("gunicorn" in row[2] for row in top["Processes"]), top
    assert any("reconcile" in row[2] for row in top["Processes"]), top
