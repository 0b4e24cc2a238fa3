"""What the runner backends are configured with: one frozen value, built by the service's settings.

It lives in the runner package, and imports nothing, so that the runner stands alone: the service turns
its configuration into a `RunnerSettings` once (`deploy_service.settings.settings_from`) and hands it
to `create_runner`; a script or a test builds one directly. The defaults are those of the service's
configuration (README). The backends check the values they depend on and refuse others with
`RunnerConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_NAMESPACE = "deploy-service"
BUILD_NETWORKS = ("default", "none")


@dataclass(frozen=True)
class RunnerSettings:
    """Every setting a runner backend reads."""

    backend: str = "docker"
    network_mode: str = "auto"
    docker_timeout: float = 30.0
    namespace: str = DEFAULT_NAMESPACE
    pull_timeout: float = 600.0
    pids_limit: int = 256
    default_uid: int = 65532
    default_gid: int = 65532
    """Who a replica runs as when its image's user is root, a name or empty (`runner.users`)."""
    log_max_size: str = "10m"
    log_max_file: int = 3
    log_line_max_bytes: int = 16 * 1024
    """Longest output line read from a container or a build; a longer one comes as several (`runner.lines`)."""
    tmpfs_mb: int = 64
    stop_timeout: float = 10.0
    build_timeout: float = 900.0
    clone_timeout: float = 120.0
    build_memory_mb: int = 2048
    """The memory of each build step's container; no swap (memory + swap = memory)."""
    build_cpus: float = 2.0
    """The CPU of each build step's container, as a CFS quota (cores)."""
    build_network: str = "default"
    """The network of build steps: `default` (the engine's for builds) or `none` (cut off the network)."""
    git_max_repo_mb: int = 500
    """The largest a clone of a git source may grow on disk; past it the clone is stopped."""
    allowed_git_hosts: tuple[str, ...] = ()
    """Git hosts (`host[:port]`, lower case) a source may be cloned from although they are loopback or private
    by name, address or what they resolve to (`ALLOWED_GIT_HOSTS`; `runner.git`)."""
    host_network_allowed: bool = True
    """Whether replicas may get host networking (false in production unless `HOST_NETWORK_ALLOWED=true`)."""
    replica_host: str = "127.0.0.1"
    publish_host: str = "127.0.0.1"
    """The engine host's address that bridge mode publishes replicas' ports on (an IP literal)."""
    registry: str = ""
    registry_username: str = ""
    registry_password: str = field(default="", repr=False)
    ssh_known_hosts: str = ""
    ssh_identity_file: str = ""

    @property
    def default_user(self) -> str:
        """`default_uid:default_gid`, as the engine takes a user."""
        return f"{self.default_uid}:{self.default_gid}"
