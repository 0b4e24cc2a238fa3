"""An engine reached over SSH (`DOCKER_HOST=ssh://...`), against a real sshd on loopback.

Each test starts a throwaway OpenSSH server as its own child process (`Sshd`): its own config, host
key and authorized client key, all in the test's tmp directory, listening on a free port of
127.0.0.1, with no password authentication. Its sessions run `docker system dial-stdio` on this
machine, so the engine at the far end is the test engine itself: what the service does over SSH is
seen on `docker_engine` (the local socket). The server is stopped by its pid after the test.

`scripts/ensure_sshd.sh` (run by scripts/test.sh) installs Debian's openssh-server and makes sshd's
privilege-separation directory; nothing is installed here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import pytest
from flask import Flask

from deploy_service.config import load_config
from deploy_service.reconciler import Reconciler
from deploy_service.runner import LABEL_MANAGED, DockerRunner, EngineUnavailable
from deploy_service.runner.docker_client import SSH_POOL_SIZE
from deploy_service.runner.settings import RunnerSettings
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import Settings, settings_from
from tests.helpers import ENGINE, Api, ProcessGroup, free_port, port_range, wait_until

HTTP_AGENT = "deploy-test/http-agent:latest"
FAST_HEALTH = {"path": "/health", "interval_seconds": 0.3, "timeout_seconds": 1.0, "retries": 2}
SETTINGS = replace(ENGINE, workers=4, port_range=port_range(29000, 29999), sample_every=15.0)
SSH_USER = "root"  # the tests run as root (as CI does); sshd's sessions run as the user who logs in


def _sshd() -> str:
    path = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(path).is_file() or not Path("/run/sshd").is_dir():
        pytest.fail("sshd (or /run/sshd) is missing: run scripts/ensure_sshd.sh", pytrace=False)
    return path


def _keygen(path: Path) -> str:
    """A new ed25519 key pair at `path` (and `path`.pub); returns the public key as `type base64`."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    kind, body, *_ = path.with_suffix(".pub").read_text().split()
    return f"{kind} {body}"


@dataclass
class Sshd:
    """A throwaway sshd on 127.0.0.1:`port`, and the files a client needs to trust it and log in."""

    port: int
    host_key: str
    client_key: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"ssh://{SSH_USER}@127.0.0.1:{self.port}"

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}\n"

    def logins(self) -> int:
        return self.log.read_text(errors="replace").count(f"Accepted publickey for {SSH_USER}")


@pytest.fixture()
def sshd(tmp_path: Path, processes: ProcessGroup) -> Iterator[Sshd]:
    """A running sshd of this test's own, stopped by its pid afterwards."""
    binary = _sshd()
    keys = tmp_path / "sshd"
    keys.mkdir()
    host_key = _keygen(keys / "host_key")
    client_key = keys / "client_key"
    authorized = keys / "authorized_keys"
    authorized.write_text(_keygen(client_key) + "\n")
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {keys / 'host_key'}",
                f"PidFile {keys / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",  # the keys live under the shared /tmp
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    log = tmp_path / "sshd.log"
    process = processes.spawn([binary, "-D", "-e", "-f", str(config)], env={"PATH": "/usr/bin:/bin"}, log=log)
    server = Sshd(port=port, host_key=host_key, client_key=client_key, log=log, process=process)

    def banner() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"sshd exited with {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                return probe.recv(8).startswith(b"SSH-2.0")
        except OSError:
            return False

    wait_until(banner, 15, interval=0.05, what="sshd to answer")
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.returncode is not None


def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sshd: Sshd, *, known_hosts: str) -> Path:
    """A HOME for the service whose ~/.ssh names the client key for 127.0.0.1 and holds `known_hosts`."""
    home = tmp_path / "home"
    dot_ssh = home / ".ssh"
    dot_ssh.mkdir(parents=True, mode=0o700)
    (dot_ssh / "known_hosts").write_text(known_hosts)
    (dot_ssh / "config").write_text(
        "Host 127.0.0.1\n"
        f"  IdentityFile {sshd.client_key}\n"
        f"  Port {sshd.port}\n"
        f"  UserKnownHostsFile {dot_ssh / 'known_hosts'}\n"
        "  IdentitiesOnly yes\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("DOCKER_HOST", sshd.url)
    return home


@dataclass
class Service:
    """The app driving the engine over SSH, with a reconciler loop of its own."""

    runner: DockerRunner
    namespace: str

    def containers(self, client: docker.DockerClient) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = client.api.containers(
            all=True, filters={"label": f"{LABEL_MANAGED}={self.namespace}"}
        )
        return rows


@pytest.fixture()
def over_ssh(
    docker_engine: docker.DockerClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> Iterator[Callable[..., Service]]:
    """Start the service's runner and reconciler on `DOCKER_HOST` as the test set it; removed afterwards."""
    started: list[tuple[Service, Reconciler | None]] = []

    def start(*, reconcile: bool = True, **runner_env: str) -> Service:
        namespace = f"test-ssh-{uuid.uuid4().hex[:8]}"
        env = {"DOCKER_NETWORK_MODE": "host", "ENGINE_NAMESPACE": namespace, "DOCKER_TIMEOUT": "10", **runner_env}
        runner = DockerRunner(settings_from(load_config(env)).runner)  # the service's config path
        monkeypatch.setitem(app.extensions, RUNNER_KEY, runner)
        configure(ALLOW_LOCAL_GIT_SOURCES=True, LOG_FOLLOW_POLL_SECONDS=0.1)
        reconciler = Reconciler(app, runner=runner, settings=SETTINGS) if reconcile else None
        if reconciler is not None:
            reconciler.start()
        service = Service(runner, namespace)
        started.append((service, reconciler))
        return service

    yield start
    for service, reconciler in started:
        if reconciler is not None:
            reconciler.stop()
        for row in service.containers(docker_engine):
            try:
                docker_engine.api.remove_container(row["Id"], force=True)
            except docker.errors.NotFound:
                pass
        service.runner.close()


def _agent(api: Api, **fields: Any) -> str:
    body = {"name": f"agent-{uuid.uuid4().hex[:8]}", "image": HTTP_AGENT, **fields}
    response = api.post("/v1/agents", body)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def test_an_agent_deploys_and_answers_through_an_ssh_engine(
    api: Api,
    sshd: Sshd,
    over_ssh: Callable[..., Service],
    docker_engine: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _home(tmp_path, monkeypatch, sshd, known_hosts=sshd.known_hosts_line)
    service = over_ssh()
    agent_id = _agent(api, health_check=FAST_HEALTH)

    response = api.post(f"/v1/agents/{agent_id}/deploy", {"replicas": 1})
    assert response.status_code == 202, response.get_json()
    deployment_id = response.get_json()["id"]
    wait_until(lambda: api.deployment(deployment_id)["status"] == "ready", 60, what="ready over SSH")

    [row] = service.containers(docker_engine)
    assert row["State"] == "running"
    assert sshd.logins() >= 1, "the engine was reached through sshd, not the local socket"
    key = {"X-API-Key": api.post(f"/v1/agents/{agent_id}/api-key", {"name": "client"}).get_json()["key"]}
    answer = api.client.post(f"/v1/agents/{agent_id}/interact", headers=key, json={"q": "over ssh"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["echo"] == {"q": "over ssh"}
    ready = api.client.get("/health/ready").get_json()["checks"]["engine"]
    assert ready["status"] == "ok", ready

    assert api.delete(f"/v1/deployments/{deployment_id}").status_code == 200
    wait_until(lambda: service.containers(docker_engine) == [], 30, what="the containers removed over SSH")
    # The removed container's last lines were read over SSH and are served after it is gone.
    kept = [line["line"] for line in api.get(f"/v1/deployments/{deployment_id}/logs").get_json()["lines"]]
    assert any("listening on" in line for line in kept), kept
    # Every distinct engine call (a path and query of its own) reused the adapter's one pool of
    # channels: the SSH connection never holds more sessions than SSH_POOL_SIZE (sshd's MaxSessions is 10).
    for _ in range(3):
        for path in ("/_ping", "/version", "/info", "/images/json", "/networks", "/containers/json?all=1"):
            service.runner._api().get(service.runner._api()._url(path)).close()
    transport = service.runner._api().get_adapter("http+docker://ssh").ssh_client.get_transport()
    assert len(transport._channels.values()) <= SSH_POOL_SIZE


def test_a_git_source_is_built_on_the_ssh_engine(
    api: Api,
    sshd: Sshd,
    over_ssh: Callable[..., Service],
    docker_engine: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A build streams its context over a connection of its own (`DeadlineClient`), made the same way."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text(f"FROM {HTTP_AGENT}\nENV BUILT_OVER=ssh\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "agent"], check=True)
    _home(tmp_path, monkeypatch, sshd, known_hosts=sshd.known_hosts_line)
    service = over_ssh()
    agent_id = _agent(api, image=None, source={"git_url": f"file://{repo}", "branch": "main"})

    deployment_id = api.post(f"/v1/agents/{agent_id}/deploy", {}).get_json()["id"]
    wait_until(lambda: api.deployment(deployment_id)["status"] in ("ready", "failed"), 90, what="built over SSH")
    body = api.deployment(deployment_id)
    assert body["status"] == "ready", body["error"]
    [row] = service.containers(docker_engine)
    assert "BUILT_OVER=ssh" in docker_engine.api.inspect_container(row["Id"])["Config"]["Env"]
    assert sshd.logins() >= 2, "the runner's connection and the build's own"
    docker_engine.images.remove(body["image"], force=True)


@pytest.mark.parametrize("known", ["nothing", "another key"])
def test_an_unknown_host_key_is_refused_with_a_503_that_says_so(
    known: str,
    api: Api,
    sshd: Sshd,
    over_ssh: Callable[..., Service],
    docker_engine: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = _keygen(tmp_path / "other_host_key")
    known_hosts = "" if known == "nothing" else f"[127.0.0.1]:{sshd.port} {other}\n"
    _home(tmp_path, monkeypatch, sshd, known_hosts=known_hosts)
    service = over_ssh(reconcile=False)
    agent_id = _agent(api)

    started = time.monotonic()
    response = api.post(f"/v1/agents/{agent_id}/deploy", {"replicas": 1})
    assert time.monotonic() - started < 10, "refused at once, not after a timeout"

    assert response.status_code == 503, response.get_json()
    body = response.get_json()
    assert body["error"] == "engine_unavailable"
    expected = "host key is unknown" if known == "nothing" else "host key does not match"
    assert expected in body["message"] and f"127.0.0.1:{sshd.port}" in body["message"], body
    assert api.get("/v1/deployments").get_json()["total"] == 0
    ready = api.client.get("/health/ready")
    assert ready.status_code == 503 and expected in ready.get_json()["checks"]["engine"]["error"]
    assert sshd.logins() == 0, "no login to a host whose key was not trusted"
    assert service.containers(docker_engine) == []


def test_key_files_named_by_settings_need_no_ssh_directory(
    sshd: Sshd, over_ssh: Callable[..., Service], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The way for a platform that mounts secret files where it likes (Render: /etc/secrets)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "engine_known_hosts").write_text(sshd.known_hosts_line)
    shutil.copy(sshd.client_key, secrets / "engine_key")
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    monkeypatch.setenv("HOME", str(empty_home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("DOCKER_HOST", sshd.url)

    runner = over_ssh(
        reconcile=False,
        DOCKER_SSH_KNOWN_HOSTS=str(secrets / "engine_known_hosts"),
        DOCKER_SSH_IDENTITY_FILE=str(secrets / "engine_key"),
    ).runner
    runner.ping()
    assert runner.local_image(HTTP_AGENT) is not None
    assert sshd.logins() == 1

    missing = DockerRunner(RunnerSettings(ssh_known_hosts=str(secrets / "absent"), docker_timeout=5))
    with pytest.raises(EngineUnavailable, match="missing"):
        missing.ping()
    missing.close()
