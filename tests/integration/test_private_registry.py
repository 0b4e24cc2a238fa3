"""Private images on the real engine: an agent's `registry_auth` is what its pull and its build send, and nothing else.

No image registry runs on this machine, so the test serves one: `TinyRegistry`, the read side of the Docker
Registry HTTP API v2 (`GET /v2/`, `GET`/`HEAD` of manifests and blobs) on 127.0.0.1 at an ephemeral port,
behind Basic authentication, serving the busybox-based http-agent test image as `agent:1` (its config and
layer from `docker save`, the layer gzipped, a schema2 manifest made here). The engine treats 127.0.0.0/8
registries as insecure, so plain HTTP is fine; such a registry may be named only because the test lists it
in `ALLOWED_REGISTRIES`.

It records the `Authorization` of every request. A decoy Docker config (`DOCKER_CONFIG` and `HOME` pointed at
a temporary directory, never the real one) holds another login for the same registry, which the registry
would accept too: it must never arrive, not even for an agent that has no `registry_auth`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from deploy_service.settings import Settings
from tests.integration import test_deployments_engine as engine_tests
from tests.integration.test_deployments_engine import BOTH_RUNNERS, HTTP_AGENT, Client, Engine, status_is, wait_until

api = engine_tests.api
"""The logged-in user's client (the fixture of test_deployments_engine)."""
engine = engine_tests.engine
"""The app on the real engine with a reconciler loop of its own (the fixture of test_deployments_engine)."""

AGENT_LOGIN = ("robot", "agent-registry-password")
MACHINE_LOGIN = ("machine", "machine-registry-password")
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def _basic(login: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()


class TinyRegistry:
    """A read-only v2 registry serving one image as `agent:1` to the logins in `accepted`."""

    def __init__(self, image: docker.models.images.Image, accepted: list[tuple[str, str]]) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifest = self._load(image)
        self.manifest_digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        self.accepted = {_basic(login) for login in accepted}
        self.seen: list[tuple[str, str, str | None]] = []
        """(method, path, Authorization) of every request."""
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                registry.answer(self, body=False)

            def do_GET(self) -> None:
                registry.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _load(self, image: docker.models.images.Image) -> bytes:
        """The image's config and gzipped layers as blobs; returns its schema2 manifest."""
        saved = io.BytesIO(b"".join(image.save()))
        with tarfile.open(fileobj=saved) as archive:
            [entry] = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
            config = archive.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
            layers = [gzip.compress(archive.extractfile(name).read(), mtime=0) for name in entry["Layers"]]  # type: ignore[union-attr]
        descriptors = []
        for blob, media_type in [(config, "application/vnd.docker.container.image.v1+json")] + [
            (layer, "application/vnd.docker.image.rootfs.diff.tar.gzip") for layer in layers
        ]:
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            self.blobs[digest] = blob
            descriptors.append({"mediaType": media_type, "size": len(blob), "digest": digest})
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": descriptors[0],
            "layers": descriptors[1:],
        }
        return json.dumps(manifest).encode()

    def answer(self, request: BaseHTTPRequestHandler, *, body: bool) -> None:
        authorization = request.headers.get("Authorization")
        self.seen.append((request.command, request.path, authorization))
        if authorization not in self.accepted:
            self._send(
                request,
                401,
                b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                "application/json",
                body=body,
                headers={"WWW-Authenticate": 'Basic realm="tiny-registry"'},
            )
            return
        path = request.path
        if path == "/v2/":
            self._send(request, 200, b"{}", "application/json", body=body)
        elif path in ("/v2/agent/manifests/1", f"/v2/agent/manifests/{self.manifest_digest}"):
            self._send(
                request,
                200,
                self.manifest,
                MANIFEST_TYPE,
                body=body,
                headers={"Docker-Content-Digest": self.manifest_digest},
            )
        elif path.startswith("/v2/agent/blobs/") and path.rsplit("/", 1)[1] in self.blobs:
            digest = path.rsplit("/", 1)[1]
            self._send(
                request,
                200,
                self.blobs[digest],
                "application/octet-stream",
                body=body,
                headers={"Docker-Content-Digest": digest},
            )
        else:
            self._send(request, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json", body=body)

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler,
        status: int,
        payload: bytes,
        content_type: str,
        *,
        body: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(payload)))
        request.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        if body:
            request.wfile.write(payload)

    def logins(self) -> set[str | None]:
        return {authorization for _, _, authorization in self.seen}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def registry(
    docker_engine: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[TinyRegistry]:
    """The tiny registry, listed in ALLOWED_REGISTRIES, with a decoy Docker config holding the machine's login."""
    served = TinyRegistry(docker_engine.images.get(HTTP_AGENT), accepted=[AGENT_LOGIN, MACHINE_LOGIN])
    decoy = {"auths": {served.address: {"auth": base64.b64encode(":".join(MACHINE_LOGIN).encode()).decode()}}}
    for where in (tmp_path / "docker-config", tmp_path / "home" / ".docker"):
        where.mkdir(parents=True)
        (where / "config.json").write_text(json.dumps(decoy))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    configure(ALLOWED_REGISTRIES=[served.address])
    yield served
    served.close()
    try:
        docker_engine.images.remove(f"{served.address}/agent:1")  # a tag of the local test image: untagged only
    except docker.errors.ImageNotFound:
        pass
    assert _basic(MACHINE_LOGIN) not in served.logins(), "the machine's Docker config was sent"


def _secret(api: Client, name: str, value: str) -> None:
    assert api.call("post", "/v1/secrets", {"name": name, "value": value}).status_code == 201


@BOTH_RUNNERS
def test_an_image_from_a_private_registry_is_pulled_with_the_agents_login_only(
    api: Client, engine: Engine, registry: TinyRegistry
) -> None:
    _secret(api, "registry-pass", AGENT_LOGIN[1])
    image = f"{registry.address}/agent:1"
    agent_id = api.agent(image=image, registry_auth={"username": AGENT_LOGIN[0], "password_secret": "registry-pass"})
    deployment_id = api.deploy(agent_id)
    wait_until(status_is(api, deployment_id, "ready", "failed"), timeout=60, what="pulled and ready")
    body = api.deployment(deployment_id)
    assert body["status"] == "ready", body["error"]
    assert "pulled" in [event["data"]["source"] for event in api.events(deployment_id, "image_ready")]
    assert any(path == "/v2/agent/manifests/1" and login == _basic(AGENT_LOGIN) for _, path, login in registry.seen)
    assert registry.logins() <= {None, _basic(AGENT_LOGIN)}
    assert AGENT_LOGIN[1] not in json.dumps(body)


def test_a_wrong_password_or_no_login_fails_the_deployment_with_a_short_clear_error(
    api: Client, engine: Engine, registry: TinyRegistry
) -> None:
    _secret(api, "wrong-pass", "not-the-password")
    image = f"{registry.address}/agent:1"
    wrong = api.agent(image=image, registry_auth={"username": AGENT_LOGIN[0], "password_secret": "wrong-pass"})
    anonymous = api.agent(image=image)
    for agent_id, says in ((wrong, "unauthorized"), (anonymous, "no basic auth credentials")):
        deployment_id = api.deploy(agent_id)
        wait_until(status_is(api, deployment_id, "failed", "ready"), timeout=60, what="the pull to fail")
        body = api.deployment(deployment_id)
        assert body["status"] == "failed"
        assert says in body["error"].lower(), (agent_id == wrong, body["error"])
        assert image in body["error"] and len(body["error"]) <= 1024
        assert "not-the-password" not in json.dumps(body)
    assert _basic((AGENT_LOGIN[0], "not-the-password")) in registry.logins()
    assert registry.logins() <= {None, _basic((AGENT_LOGIN[0], "not-the-password"))}


def test_a_git_agents_build_pulls_its_from_image_with_the_agents_login(
    api: Client, engine: Engine, registry: TinyRegistry, tmp_path: Path, docker_engine: docker.DockerClient
) -> None:
    _secret(api, "registry-pass", AGENT_LOGIN[1])
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text(f"FROM {registry.address}/agent:1\nENV BUILT_FROM=private\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "agent"], check=True)
    login = {"username": AGENT_LOGIN[0], "password_secret": "registry-pass", "registry": registry.address}
    agent_id = api.agent(image=None, source={"git_url": f"file://{repo}"}, registry_auth=login)
    deployment_id = api.deploy(agent_id)
    try:
        wait_until(status_is(api, deployment_id, "ready", "failed"), timeout=90, what="built")
        body = api.deployment(deployment_id)
        assert body["status"] == "ready", body["error"]
        env = engine.inspect(engine.containers(deployment_id)[0].id).attrs["Config"]["Env"]
        assert "BUILT_FROM=private" in env
        assert any(path == "/v2/agent/manifests/1" and seen == _basic(AGENT_LOGIN) for _, path, seen in registry.seen)
        assert registry.logins() <= {None, _basic(AGENT_LOGIN)}
        lines = api.call("get", f"/v1/deployments/{deployment_id}/logs?source=build&tail=1000").get_json()["lines"]
        assert AGENT_LOGIN[1] not in json.dumps(lines)
    finally:
        engine.remove_all()
        try:
            docker_engine.images.remove(f"deploy-service/agent-{agent_id}:r1", force=True)
        except docker.errors.ImageNotFound:
            pass


def test_the_anonymous_build_of_a_private_from_image_fails_clearly(
    api: Client, engine: Engine, registry: TinyRegistry, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text(f"FROM {registry.address}/agent:1\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "agent"], check=True)
    deployment_id = api.deploy(api.agent(image=None, source={"git_url": f"file://{repo}"}))
    wait_until(status_is(api, deployment_id, "failed", "ready"), timeout=90, what="the build to fail")
    body = api.deployment(deployment_id)
    assert body["status"] == "failed"
    assert "no basic auth credentials" in body["error"], body["error"]
