"""Git sources an agent may not name: hosts on loopback or a private network, by name, address or answer.

The attack: give an agent the git source `https://127.0.0.1:8443/x.git`, `https://10.0.0.5/x.git`,
`https://169.254.169.254/...`, or a public-looking name whose DNS answer is a private address (or
becomes one after the check), or a public host that redirects elsewhere. The service's own process
clones the source with git before the engine builds it, so without a rule git connects inside the
operator's network for the user (SSRF). What the service does:

- at create and update, a host that is loopback or private by its name or literal address (every
  inet_aton form, IPv4-mapped IPv6, `localhost`, `*.localhost`) is a 400 `validation_error` on
  `source.git_url` unless `ALLOWED_GIT_HOSTS` lists it; a deploy or restart of an agent stored before
  the rule is refused the same way (`references.check_git_origin`);
- at clone time the runner resolves the host once, refuses the clone when an answer is not a public
  address (unless the host is allowed), with a message that names the host, never the address, and pins
  git to the addresses it checked (`http.curloptResolve`) with redirects off (`http.followRedirects`),
  so neither a second lookup nor a redirect takes git elsewhere (`runner.git`).

The real clones run against an https git server on loopback (`git http-backend` behind `http.server`,
with a throwaway CA): its name, `git.example.test`, resolves nowhere, so a clone that reaches it shows git
used the pinned address.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from deploy_service.extensions import db
from deploy_service.models import Agent, Deployment
from deploy_service.runner import BuildFailed, git
from deploy_service.runner.base import BuildSpec
from deploy_service.runner.docker_images import build_from_source
from deploy_service.runner.settings import RunnerSettings
from deploy_service.settings import Settings
from tests.factories import AuthActions, agent_payload, make_agent
from tests.fakes import FakeRunner
from tests.helpers import assert_error, certificates

PUBLIC = "93.184.216.34"
"""A public address no test connects to (every clone that would reach it is refused or stood in for)."""
NAME = "git.example.test"
"""A made-up name (`.test` resolves nowhere): only the `resolver` fixture answers for it."""

PRIVATE_GIT_URLS = [
    "https://127.0.0.1:8443/x.git",
    "https://127.0.0.1/x.git",
    "https://10.0.0.5/x.git",
    "https://169.254.169.254/latest/meta-data.git",
    "https://192.168.1.5/team/x.git",
    "https://172.16.0.1/x.git",
    "https://100.64.0.1/x.git",
    "https://0.0.0.0/x.git",
    "https://127.1/x.git",
    "https://2130706433/x.git",
    "https://0x7f.1/x.git",
    "https://017700000001/x.git",
    "https://localhost/x.git",
    "https://LOCALHOST:8443/x.git",
    "https://git.localhost/x.git",
    "https://[::1]/x.git",
    "https://[::ffff:127.0.0.1]/x.git",
    "https://[fd00::1]/x.git",
]


def _source(url: str) -> dict[str, Any]:
    return {"image": None, "source": {"git_url": url}}


def _git_url_error(response: Any) -> list[str]:
    details = assert_error(response, 400, "validation_error")["details"]
    assert list(details) == ["source"] and list(details["source"]) == ["git_url"], details
    messages: list[str] = details["source"]["git_url"]
    return messages


def _agents(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Agent)) or 0


# -- create, update, deploy ---------------------------------------------------------------------


@pytest.mark.parametrize("url", PRIVATE_GIT_URLS)
def test_a_git_source_on_a_loopback_or_private_host_is_refused_at_create_and_update(
    app: Flask, client: FlaskClient, auth: AuthActions, url: str
) -> None:
    owner, headers = auth.user()
    created = client.post("/v1/agents", headers=headers, json=agent_payload(**_source(url)))
    _git_url_error(created)
    assert _agents(app) == 0
    agent = make_agent(app, owner)
    _git_url_error(client.patch(f"/v1/agents/{agent['id']}", headers=headers, json=_source(url)))


def test_the_refusal_names_the_host_and_the_setting(client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.user()
    created = client.post("/v1/agents", headers=headers, json=agent_payload(**_source("https://10.0.0.5/x.git")))
    [message] = _git_url_error(created)
    assert "10.0.0.5" in message and "ALLOWED_GIT_HOSTS" in message


@pytest.mark.parametrize(
    ("allowed", "url", "status"),
    [
        (["127.0.0.1:8443"], "https://127.0.0.1:8443/x.git", 201),
        (["127.0.0.1:8443"], "https://127.0.0.1:8444/x.git", 400),
        (["127.0.0.1:8443"], "https://127.0.0.1/x.git", 400),
        (["127.0.0.1:443"], "https://127.0.0.1/x.git", 201),
        (["10.0.0.5"], "https://10.0.0.5:9000/team/x.git", 201),
        (["Git.Internal.Localhost"], "https://git.internal.localhost/x.git", 201),
        (["other.example", "localhost"], "https://localhost/x.git", 201),
        (["10.0.0.5"], "https://10.0.0.6/x.git", 400),
    ],
)
def test_allowed_git_hosts_let_a_listed_host_through(
    make_app: Callable[..., Flask], auth: AuthActions, allowed: list[str], url: str, status: int
) -> None:
    _, headers = auth.user()
    other = make_app(ALLOWED_GIT_HOSTS=allowed, RECONCILER_ENABLED=False).test_client()
    response = other.post("/v1/agents", headers=headers, json=agent_payload(**_source(url)))
    assert response.status_code == status, response.get_json()
    if status == 400:
        _git_url_error(response)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/agent.git",
        f"https://{NAME}:8443/acme/agent.git",
        "https://localhost.example.com/x.git",
        "https://10.0.0.5.example.com/x.git",
        "https://8.8.8.8/x.git",
    ],
)
def test_public_hosts_and_look_alikes_stay_allowed(client: FlaskClient, auth: AuthActions, url: str) -> None:
    _, headers = auth.user()
    response = client.post("/v1/agents", headers=headers, json=agent_payload(**_source(url)))
    assert response.status_code == 201, response.get_json()


def test_local_sources_are_not_concerned(
    client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(ALLOW_LOCAL_GIT_SOURCES=True)
    _, headers = auth.user()
    for url in ("/srv/repos/agent", "file:///srv/repos/agent"):
        response = client.post("/v1/agents", headers=headers, json=agent_payload(**_source(url)))
        assert response.status_code == 201, response.get_json()


def test_an_agent_stored_before_the_rule_is_refused_at_deploy_and_restart(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    owner, headers = auth.user()
    agent = make_agent(app, owner, **_source("https://github.com/acme/agent.git"))

    def store(url: str) -> None:
        with app.app_context():
            stored = db.session.get(Agent, agent["id"])
            assert stored is not None
            db.session.execute(
                update(Agent).where(Agent.id == agent["id"]).values(source={**stored.source, "git_url": url})
            )
            db.session.commit()

    store("https://169.254.169.254/latest.git")
    _git_url_error(client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={}))
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Deployment)) == 0
    store("https://github.com/acme/agent.git")
    deployed = client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={})
    assert deployed.status_code == 202, deployed.get_json()
    store("https://127.1:8443/x.git")
    with app.app_context():
        db.session.execute(update(Deployment).where(Deployment.id == deployed.get_json()["id"]).values(status="ready"))
        db.session.commit()
    _git_url_error(client.post(f"/v1/deployments/{deployed.get_json()['id']}/restart", headers=headers))
    store("https://[::1/x.git")  # stored malformed: still a 400 on the field, never a 500
    _git_url_error(client.post(f"/v1/deployments/{deployed.get_json()['id']}/restart", headers=headers))


# -- the clone: one lookup, checked, pinned --------------------------------------------------------


class Resolver:
    """Stands in for DNS in this process (`socket.getaddrinfo`): `names[host]` are the addresses a lookup
    of `host` gets; a literal address resolves to itself; any other name does not resolve."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            name = host.decode() if isinstance(host, bytes) else str(host)
            if name not in self.names:
                try:
                    ipaddress.ip_address(name.strip("[]"))
                except ValueError:
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
                return real(host, port, *args, **kwargs)
            self.lookups.append(name)
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port or 0)))
                for a in self.names[name]
            ]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture()
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    return Resolver(monkeypatch)


class Spawned(Exception):
    """What the stand-in for `subprocess.Popen` raises: git would have run with `argv`."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.argv = argv


@pytest.fixture()
def spawns(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git the clone starts, recorded instead of run."""
    started: list[list[str]] = []

    def popen(argv: list[str], **_: Any) -> Any:
        started.append(list(argv))
        raise Spawned(list(argv))

    monkeypatch.setattr(git.subprocess, "Popen", popen)
    return started


def _clone(url: str, dest: Path, *, allowed: tuple[str, ...] = (), timeout: float = 30) -> None:
    git.clone(url, "main", str(dest), timeout=timeout, allow_local=False, allowed_hosts=allowed)


@pytest.mark.parametrize(
    "answer",
    [
        ["127.0.0.1"],
        ["10.0.0.5"],
        ["169.254.169.254"],
        ["192.168.1.5"],
        [PUBLIC, "172.16.0.1"],
        ["::1"],
        ["::ffff:127.0.0.1"],
        ["fd00::1"],
        ["224.0.0.1"],
    ],
)
def test_a_name_that_resolves_to_a_private_address_is_refused_before_git_runs(
    resolver: Resolver, spawns: list[list[str]], tmp_path: Path, answer: list[str]
) -> None:
    resolver.names[NAME] = answer
    with pytest.raises(BuildFailed) as refused:
        _clone(f"https://{NAME}/acme/agent.git", tmp_path / "dest")
    assert spawns == []
    assert NAME in refused.value.message and "ALLOWED_GIT_HOSTS" in refused.value.message
    assert not any(address in refused.value.message for address in answer)
    assert resolver.lookups == [NAME]


def test_a_name_that_does_not_resolve_is_refused_before_git_runs(
    resolver: Resolver, spawns: list[list[str]], tmp_path: Path
) -> None:
    with pytest.raises(BuildFailed, match="could not be resolved"):
        _clone("https://nowhere.example.test/x.git", tmp_path / "dest")
    assert spawns == []


def test_a_private_literal_is_refused_in_the_runner_too(spawns: list[list[str]], tmp_path: Path) -> None:
    for url in ("https://127.1/x.git", "https://localhost/x.git", "https://git.localhost/x.git"):
        with pytest.raises(BuildFailed, match="ALLOWED_GIT_HOSTS"):
            _clone(url, tmp_path / "dest")
    assert spawns == []


def test_git_is_pinned_to_the_checked_addresses_and_follows_no_redirects(
    resolver: Resolver, spawns: list[list[str]], tmp_path: Path
) -> None:
    resolver.names["github.example.com"] = [PUBLIC, "2606:4700::1111"]
    with pytest.raises(Spawned) as spawned:
        _clone("https://GitHub.example.com:8443/acme/agent.git", tmp_path / "dest")
    argv = spawned.value.argv
    assert resolver.lookups == ["github.example.com"]
    options = [argv[i + 1] for i, arg in enumerate(argv[: argv.index("clone")]) if arg == "-c"]
    assert f"http.curloptResolve=github.example.com:8443:{PUBLIC},[2606:4700::1111]" in options
    assert "http.followRedirects=false" in options
    assert {"protocol.allow=never", "protocol.https.allow=always", "core.hooksPath=/dev/null"} <= set(options)
    assert argv[-2:] == ["https://GitHub.example.com:8443/acme/agent.git", str(tmp_path / "dest")]


def test_the_clone_command_carries_the_pin_and_no_redirects() -> None:
    argv = git.clone_command(
        f"https://{NAME}/acme/agent.git", "main", "/tmp/dest", allow_local=False, pin=("127.0.0.1",)
    )
    options = [argv[i + 1] for i, arg in enumerate(argv[: argv.index("clone")]) if arg == "-c"]
    assert f"http.curloptResolve={NAME}:443:127.0.0.1" in options
    assert "http.followRedirects=false" in options
    local = git.clone_command("/srv/repos/agent", "main", "/tmp/dest", allow_local=True)
    assert not any(arg.startswith("http.curloptResolve") for arg in local)  # nothing to pin for a local source


def test_an_allowed_host_is_still_pinned_to_what_it_resolved_to(
    resolver: Resolver, spawns: list[list[str]], tmp_path: Path
) -> None:
    resolver.names[NAME] = ["10.0.0.5"]
    with pytest.raises(Spawned) as spawned:
        _clone(f"https://{NAME}/x.git", tmp_path / "dest", allowed=(NAME,))
    assert f"http.curloptResolve={NAME}:443:10.0.0.5" in spawned.value.argv


def test_the_builds_clone_takes_allowed_git_hosts_from_the_runner_settings(
    resolver: Resolver, spawns: list[list[str]]
) -> None:
    resolver.names[NAME] = ["127.0.0.1"]
    spec = BuildSpec(git_url=f"https://{NAME}/x.git", branch="main", tag="deploy-service/agent-x:r1")

    def build(settings: RunnerSettings) -> None:
        build_from_source(None, spec, clone_timeout=5, build_timeout=5, on_output=lambda _: None, settings=settings)

    with pytest.raises(BuildFailed, match="ALLOWED_GIT_HOSTS"):
        build(RunnerSettings())
    assert spawns == []
    with pytest.raises(Spawned):
        build(RunnerSettings(allowed_git_hosts=(NAME,)))


# -- real clones over https on loopback -----------------------------------------------------------------


class GitServer:
    """An https git server on 127.0.0.1: `git http-backend` (smart HTTP) over the bare repositories in
    `root`, behind `http.server`. `requests` are the paths asked for; a path starting with a key of
    `redirects` is answered 302 to its value instead."""

    def __init__(self, root: Path, tls: ssl.SSLContext) -> None:
        self.requests: list[str] = []
        self.redirects: dict[str, str] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._serve()

            def do_POST(self) -> None:  # noqa: N802
                self._serve()

            def _serve(self) -> None:
                path, _, query = self.path.partition("?")
                server.requests.append(path)
                for prefix, location in server.redirects.items():
                    if path.startswith(prefix):
                        self.send_response(302)
                        self.send_header("Location", location + path[len(prefix) :] + (f"?{query}" if query else ""))
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": "/dev/null",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "REMOTE_ADDR": "127.0.0.1",
                }
                output = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
                head, _, payload = output.partition(b"\r\n\r\n")
                headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
                status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() != "status":
                        self.send_header(name, value.strip())
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def git_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitServer]:
    """`repo.git` (one commit on `main` with a Dockerfile) served over https as `git.example.test`, whose
    certificate the clone trusts (the CA is added to the clone's environment)."""
    work, root = tmp_path / "work", tmp_path / "root"
    work.mkdir()
    root.mkdir()
    (work / "Dockerfile").write_text("FROM scratch\n")
    run = ["git", "-C", str(work), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*run, "add", "."], check=True)
    subprocess.run([*run, "commit", "-qm", "one"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True)
    ca_file, issued = certificates(tmp_path, NAME)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*issued[NAME])
    environment = git.clone_environment
    monkeypatch.setattr(
        git, "clone_environment", lambda home, **kw: {**environment(home, **kw), "GIT_SSL_CAINFO": str(ca_file)}
    )
    server = GitServer(root, tls)
    yield server
    server.close()


def test_a_real_clone_connects_to_the_pinned_address(resolver: Resolver, git_server: GitServer, tmp_path: Path) -> None:
    resolver.names[NAME] = ["127.0.0.1"]
    dest = tmp_path / "dest"
    _clone(f"https://{NAME}:{git_server.port}/repo.git", dest, allowed=(NAME,))
    assert (dest / "Dockerfile").read_text() == "FROM scratch\n"
    assert git_server.requests[0] == "/repo.git/info/refs"
    assert resolver.lookups == [NAME]


def test_a_real_clone_follows_no_redirect(resolver: Resolver, git_server: GitServer, tmp_path: Path) -> None:
    resolver.names[NAME] = ["127.0.0.1"]
    git_server.redirects["/moved.git"] = f"https://{NAME}:{git_server.port}/repo.git"
    with pytest.raises(BuildFailed, match="git clone failed"):
        _clone(f"https://{NAME}:{git_server.port}/moved.git", tmp_path / "dest", allowed=(NAME,))
    assert git_server.requests == ["/moved.git/info/refs"]
    assert not (tmp_path / "dest" / "Dockerfile").exists()
