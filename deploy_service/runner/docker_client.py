"""Making the docker SDK client every Docker backend talks through: `engine_client`, and `connection_lost`.

The engine is the one `DOCKER_HOST` names (read by the SDK, with `DOCKER_TLS_VERIFY` and
`DOCKER_CERT_PATH`), or the local socket. The runner's shared client (`DockerRunner`, and so
`SwarmRunner`) and the one-off clients of long pulls and builds (`docker_streams.DeadlineClient`) are
all made here, so an `ssh://` engine is reached the same way by each of them.

`ssh://user@host:port` goes through the SDK's paramiko transport (`docker.transport.SSHHTTPAdapter`):
one SSH connection per client, one session channel per HTTP connection, each running
`docker system dial-stdio` on the engine host. It was chosen over the SDK's other mode, which shells
out to OpenSSH for every HTTP connection, because that mode needs paramiko installed all the same (the
SDK imports the adapter from the paramiko module), applies no timeout to its reads (a stalled engine
would hold a worker forever), starts a new `ssh` process and handshake per request, and prompts on a
terminal for an unknown host key or a password instead of failing. The paramiko adapter never asks:

- host keys: only keys in `~/.ssh/known_hosts` (and `DOCKER_SSH_KNOWN_HOSTS`, when set) are accepted;
  an unknown key is refused (`RejectPolicy`), a changed one too. For a port other than 22 the entry
  reads `[host]:port <key>`, as `ssh-keyscan -p port host` prints it.
- client key: `DOCKER_SSH_IDENTITY_FILE` when set, else `IdentityFile` of the host's entry in
  `~/.ssh/config`, else paramiko's defaults (`~/.ssh/id_*`, an agent). The SDK reads only `HostName`,
  `User`, `IdentityFile` and `ProxyCommand` from that file, and its `Port` only when the URL has none,
  which never happens (the SDK adds `:22`): put the port in `DOCKER_HOST`.

What the SDK leaves unbounded is bounded here: its adapter connects (TCP, banner, authentication) as
it is constructed, with no timeout at all, so this module makes that adapter itself (`_SSHAdapter`,
every step bounded by the client's timeout) and mounts it the way `docker.APIClient` does for ssh://
(docker 7.2.0, pinned). Its idle connections are kept within sshd's default `MaxSessions` (10, one
left for the connection itself: `SSH_POOL_SIZE`). A connection that died (the engine host rebooted,
sshd restarted) is not reopened by the SDK; `connection_lost` tells the runner to make a new client.

Failures to connect become `EngineUnavailable` with the reason (host key unknown, authentication
refused, host unreachable), so a client sees a 503 that names it, never a 500.

No client sends the registry credentials stored on the service's machine (`~/.docker/config.json`, or
`$DOCKER_CONFIG`, and the credential helpers it names): the SDK reads that file and attaches what it
finds to pulls (`X-Registry-Auth`, for the registry of the image asked for), pushes, service specs and
builds (`X-Registry-Config`, every registry's), and reads the file again whenever what it holds is
empty. Images are named by users, so those credentials would pull a tenant whatever the operator's
login reaches. Every client made here holds `NoStoredAuth` instead: never empty, so nothing is read
again, and it resolves no credentials. The only credentials the service sends are those it is
configured with (`SWARM_REGISTRY_USERNAME` / `SWARM_REGISTRY_PASSWORD`, given to a push explicitly) and
an agent's own `registry_auth` (`RegistryCredentials`), given explicitly to that agent's pull, build or
service, for its one registry (`pull_auth`, `build_registry_config`).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from typing import Any

import docker
import paramiko
from docker.auth import AuthConfig, encode_header
from docker.errors import DockerException
from docker.transport import SSHHTTPAdapter

from deploy_service.runner.base import RegistryCredentials
from deploy_service.runner.errors import EngineUnavailable
from deploy_service.runner.settings import RunnerSettings

__all__ = [
    "SSH_POOL_SIZE",
    "NoStoredAuth",
    "build_registry_config",
    "connection_lost",
    "engine_client",
    "pull_auth",
    "registry_auth_header",
]

log = logging.getLogger(__name__)

SSH_POOL_SIZE = 9
"""Idle SSH channels a client keeps: sshd's default `MaxSessions` is 10, one being the connection's own."""

_POOL_URL = "http+docker://ssh"
"""The one key of an SSH adapter's connection pool."""

_PLACEHOLDER_HOST = "tcp://127.0.0.1:9"
"""Where the SDK client is first pointed (never contacted) before the SSH adapter is mounted on it."""


def engine_client(
    settings: RunnerSettings, *, timeout: float, max_pool_size: int, version: str | None = None
) -> docker.DockerClient:
    """A client of the engine `DOCKER_HOST` names (the local socket when unset).

    Args:
        settings: the runner's settings (the SSH key and known-hosts files, for an ssh:// engine).
        timeout: seconds any one engine call (and, over SSH, connecting) may take.
        max_pool_size: connections kept for reuse (at most `SSH_POOL_SIZE` over SSH).
        version: the engine API version to speak; None asks the engine.

    Raises:
        EngineUnavailable: the engine cannot be reached (over SSH: with the reason, e.g. an unknown host key).
    """
    host = os.environ.get("DOCKER_HOST", "").strip()
    try:
        if host.startswith("ssh://"):
            client = _ssh_client(host, settings, timeout=timeout, max_pool_size=max_pool_size, version=version)
        else:
            client = docker.from_env(version=version, timeout=timeout, max_pool_size=max_pool_size)
    except DockerException as exc:
        log.warning("cannot create the container engine client: %s", exc)
        raise EngineUnavailable("The container engine cannot be reached.") from exc
    client.api._auth_configs = NoStoredAuth()
    return client


class NoStoredAuth(AuthConfig):
    """The SDK's registry credentials, held empty for good: nothing resolves, and the config file is never read.

    The SDK reloads `config.json` whenever its credentials are falsy or `is_empty`; this one is neither.
    """

    def __init__(self) -> None:
        super().__init__({})

    def __bool__(self) -> bool:
        return True

    @property
    def is_empty(self) -> bool:
        return False

    def resolve_authconfig(self, registry: str | None = None) -> None:
        return None

    def get_all_credentials(self) -> dict[str, Any]:
        return {}


DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
"""The key the engine looks Docker Hub's credentials up by."""


def _server(registry: str) -> str:
    return DOCKER_HUB_SERVER if registry in ("docker.io", "index.docker.io") else registry


def pull_auth(credentials: RegistryCredentials | None, *, registry: str) -> dict[str, str] | None:
    """The `auth_config` of a pull from `registry`: the agent's login when it is for that registry, else None.

    Credentials are for one registry: an image elsewhere is pulled without them, never with them.
    """
    if credentials is None or _server(credentials.registry) != _server(registry):
        return None
    return {
        "username": credentials.username,
        "password": credentials.password,
        "serveraddress": _server(credentials.registry),
    }


def registry_auth_header(credentials: RegistryCredentials | None, *, registry: str) -> dict[str, str]:
    """The `X-Registry-Auth` header of an engine call that pulls from `registry` (a Swarm service), or none."""
    config = pull_auth(credentials, registry=registry)
    return {} if config is None else {"X-Registry-Auth": encode_header(config).decode("ascii")}


def build_registry_config(credentials: RegistryCredentials | None) -> dict[str, str]:
    """The `X-Registry-Config` header of a build: the agent's login for its one registry, or none at all."""
    if credentials is None:
        return {}
    config = {
        _server(credentials.registry): {
            "username": credentials.username,
            "password": credentials.password,
            "serveraddress": _server(credentials.registry),
        }
    }
    return {"X-Registry-Config": encode_header(config).decode("ascii")}


def connection_lost(client: docker.DockerClient) -> bool:
    """Whether `client` talks over an SSH connection that has died (the SDK does not reopen one)."""
    adapter = getattr(client.api, "_custom_adapter", None)
    return isinstance(adapter, _SSHAdapter) and not adapter.connected()


def _ssh_client(
    host: str, settings: RunnerSettings, *, timeout: float, max_pool_size: int, version: str | None
) -> docker.DockerClient:
    """A client of the engine at `host` (ssh://...) over one bounded, host-key-checked SSH connection."""
    where = _display(host)
    try:
        adapter = _SSHAdapter(
            host,
            timeout=timeout,
            max_pool_size=min(max_pool_size, SSH_POOL_SIZE),
            known_hosts=settings.ssh_known_hosts,
            identity_file=settings.ssh_identity_file,
        )
    except (paramiko.SSHException, OSError) as exc:
        reason = _reason(exc, settings)
        log.warning("cannot open the SSH connection to the container engine at %s: %s", where, reason)
        raise EngineUnavailable(f"The container engine at {where} cannot be reached over SSH: {reason}") from exc
    try:
        client = docker.DockerClient(base_url=_PLACEHOLDER_HOST, version="1.41", timeout=timeout)
        api = client.api
        api.close()  # the placeholder's own HTTP adapters, never used
        api._custom_adapter = adapter
        api.mount("http+docker://ssh", adapter)
        api._unmount("http://", "https://")
        api.base_url = "http+docker://ssh"
        api._version = version or api._retrieve_server_version()
    except DockerException as exc:
        adapter.close()
        log.warning("the container engine at %s gave no API version over SSH: %s", where, exc)
        raise EngineUnavailable(
            f"The container engine at {where} does not answer over SSH (is `docker system dial-stdio` "
            f"allowed for this user there?): {exc}"
        ) from exc
    except BaseException:
        adapter.close()
        raise
    return client


class _SSHAdapter(SSHHTTPAdapter):
    """The SDK's paramiko adapter, with connecting bounded and the key files the settings name."""

    def __init__(
        self, base_url: str, *, timeout: float, max_pool_size: int, known_hosts: str, identity_file: str
    ) -> None:
        self._connect_timeout = timeout
        self._known_hosts = known_hosts
        self._identity_file = identity_file
        super().__init__(base_url, timeout=timeout, max_pool_size=max_pool_size)  # connects

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        """The adapter's one pool of SSH channels, whatever the request's URL.

        The SDK keys its pools by the request's whole URL (path and query: `BaseHTTPAdapter` passes
        `request.url`), so every distinct call (`/containers/<id>/json`, `/networks?filters=...`, a
        container's logs) made a pool of its own, each keeping an idle channel open: ten of them filled
        sshd's `MaxSessions` and every later engine call was refused. One pool keeps the channels within
        `SSH_POOL_SIZE`.
        """
        return super().get_connection(_POOL_URL, proxies)

    def _create_paramiko_client(self, base_url: str) -> None:
        super()._create_paramiko_client(base_url)  # ~/.ssh/config, ~/.ssh/known_hosts
        client: paramiko.SSHClient = self.ssh_client
        if self._known_hosts:
            client.load_system_host_keys(os.path.expanduser(self._known_hosts))  # a missing file raises
        client.set_missing_host_key_policy(paramiko.RejectPolicy())  # the SDK's choice too, kept explicit
        if self._identity_file:
            self.ssh_params["key_filename"] = os.path.expanduser(self._identity_file)
        bound = self._connect_timeout
        self.ssh_params.update(timeout=bound, banner_timeout=bound, auth_timeout=bound, channel_timeout=bound)

    def connected(self) -> bool:
        transport: Any = self.ssh_client.get_transport() if self.ssh_client else None
        return bool(transport is not None and transport.is_active())


def _display(host: str) -> str:
    """`host` without a password, should the URL carry one."""
    url = urllib.parse.urlsplit(host)
    user = f"{url.username}@" if url.username else ""
    port = f":{url.port}" if url.port else ""
    return f"ssh://{user}{url.hostname}{port}"


def _reason(exc: BaseException, settings: RunnerSettings) -> str:
    """What went wrong connecting, in words an operator can act on."""
    if isinstance(exc, paramiko.BadHostKeyException):
        return f"the host key does not match the known one ({exc}); if the host was re-keyed, update known_hosts"
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed ({exc}); check the client key (DOCKER_SSH_IDENTITY_FILE or ~/.ssh/config)"
    if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        where = settings.ssh_known_hosts or "~/.ssh/known_hosts"
        return f"the host key is unknown ({exc}); add it to {where} (DOCKER_SSH_KNOWN_HOSTS)"
    if isinstance(exc, FileNotFoundError):
        return f"a key or known-hosts file is missing ({exc})"
    return f"{type(exc).__name__}: {exc}"
