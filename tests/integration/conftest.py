"""Fixtures for the tests that drive a real container engine.

They need the engine that `scripts/ensure_docker.sh` starts (the environment's `DOCKER_HOST`, or the
local socket) and the test images of `tests/integration/images/`, which the session builds once with
`build.sh` (it skips up-to-date images). An engine that does not answer fails the session, because
these tests are part of the suite; `DEPLOY_SERVICE_SKIP_ENGINE_TESTS=1` skips them instead.

`docker_engine` and `swarm_manager` are in tests/conftest.py (tests/faults uses them too).

Each test gets its own deployment-id prefix; after the test every managed container whose deployment
label starts with it is removed, so tests never touch containers they did not create.

`user_images` builds, once per session, tiny `FROM scratch` images (the host's static busybox, an
/etc/passwd in which the name `toor` is uid 0 and `app` is 1000) that differ only in their `USER`, and
print the uid and gid they run as: what the runners' never-uid-0 rule is proven against.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

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


BUSYBOX = Path("/bin/busybox")
PASSWD = (
    "root:x:0:0:root:/:/bin/sh\n"
    "toor:x:0:0:root by another name:/:/bin/sh\n"
    "app:x:1000:1000:app:/:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/:/bin/false\n"
)
GROUP = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"
WHOAMI = 'echo "uid=$(id -u) gid=$(id -g)"; trap "exit 0" TERM; while true; do sleep 1; done'
USER_VARIANTS = {
    "none": None,
    "root": "root",
    "zero": "0",
    "zero-zero": "0:0",
    "plus-zero": "+0",
    "toor": "toor",
    "nobody": "nobody",
    "uid-1000": "1000",
    "uid-gid-1000": "1000:1000",
}
"""Image variant → its Dockerfile `USER` (None: no USER instruction)."""


def _user_image_context(user: str | None) -> io.BytesIO:
    """A build context: busybox with the applets the program needs, /etc files, and the Dockerfile."""
    lines = ["FROM scratch", "COPY rootfs/ /", "ENV PATH=/bin"]
    if user is not None:
        lines.append(f"USER {user}")
    lines.append(f"ENTRYPOINT {json.dumps(['/bin/sh', '-c', WHOAMI])}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", "\n".join(lines).encode())
        add("rootfs/bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in ("sh", "id", "sleep"):
            link = tarfile.TarInfo(f"rootfs/bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        add("rootfs/etc/passwd", PASSWD.encode())
        add("rootfs/etc/group", GROUP.encode())
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="session")
def user_images(docker_engine: docker.DockerClient) -> Iterator[dict[str, str]]:
    """Variant (`USER_VARIANTS`) → tag of an image that prints `uid=<n> gid=<n>` and stays up; removed after."""
    prefix = f"deploy-test/whoami-{uuid.uuid4().hex[:8]}"
    tags = {}
    for variant, user in USER_VARIANTS.items():
        tag = f"{prefix}:{variant}"
        docker_engine.images.build(fileobj=_user_image_context(user), custom_context=True, tag=tag, rm=True)
        tags[variant] = tag
    yield tags
    for tag in tags.values():
        try:
            docker_engine.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass


def printed_ids(client: docker.DockerClient, container_id: str, *, timeout: float = 20.0) -> str:
    """The `uid=<n> gid=<n>` line a `user_images` container printed (its first process's real ids)."""
    deadline = time.monotonic() + timeout
    while True:
        output = client.api.logs(container_id, stdout=True, stderr=True).decode()
        for line in output.splitlines():
            if line.startswith("uid="):
                return line.strip()
        if time.monotonic() > deadline:
            raise AssertionError(f"container {container_id[:12]} printed no ids: {output!r}")
        time.sleep(0.05)
