"""The service's settings as typed, frozen values, built once from the configuration.

`config.load_config` reads the environment into the Flask config mapping; `settings_from` turns that
mapping (with the factory's overrides applied) into one `Settings`, checked: a value of the wrong type
or one the service must not run with is a `ConfigError` naming the variable. `create_app` builds it
once and keeps it in `app.extensions`; code takes the group it needs as an argument, or reads it with
`current_settings()` inside a request or app context (`settings_for(app)` outside one).

Groups follow who reads them: the auth checks, the HTTP layer, the rate limiter, the agent limits,
interact, logs, alerts, webhooks, the runner (`runner.settings.RunnerSettings`, which lives beside the
runner so that the runner imports nothing of the service) and the reconciler. Keys that Flask and its
extensions read themselves (`SQLALCHEMY_*`, `JWT_*` for flask-jwt-extended, `RATELIMIT_*` for
flask-limiter, `MAX_CONTENT_LENGTH`) stay in `app.config` for them as well.

A leaf module: it imports nothing of the service but the runner's settings value, so that every layer
(the extensions, the error module) may import it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Flask, current_app

from deploy_service.runner.errors import RunnerConfigError
from deploy_service.runner.settings import BUILD_NETWORKS, DEFAULT_NAMESPACE, RunnerSettings
from deploy_service.runner.swarm_records import MAX_REPLICAS as SWARM_MAX_REPLICAS
from deploy_service.runner.users import check_default_user

EXTENSION_KEY = "deploy_service.settings"
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789"
JWT_ALGORITHM = "HS256"
NETWORK_MODES = ("auto", "bridge", "host")
RUNNERS = ("docker", "swarm")


class ConfigError(RuntimeError):
    """The environment holds a setting the service must not start with."""


def parse_port_range(value: str) -> tuple[int, int]:
    """`"20000-29999"` → (20000, 29999).

    Raises:
        ConfigError: not two ports in order.
    """
    try:
        low, high = (int(part) for part in value.split("-", 1))
    except ValueError as exc:
        raise ConfigError(f"HOST_PORT_RANGE must look like 20000-29999, got {value!r}") from exc
    if not 1024 <= low <= high <= 65535:
        raise ConfigError(f"HOST_PORT_RANGE must be within 1024-65535 and ordered, got {value!r}")
    return low, high


@dataclass(frozen=True)
class TokenSettings:
    """How access tokens are verified (the same keys flask-jwt-extended signs them with)."""

    secret_key: str = field(repr=False)
    algorithms: tuple[str, ...] = (JWT_ALGORITHM,)
    leeway: float = 0


@dataclass(frozen=True)
class AuthSettings:
    """Logins, tokens, password hashing, encryption of secrets and API key material."""

    tokens: TokenSettings
    access_token_expires: timedelta
    refresh_token_expires: timedelta
    registration_enabled: bool
    default_role: str
    """The role of every new account but the first (`developer` or `user`)."""
    password_time_cost: int
    password_memory_kib: int
    secret_key: str = field(repr=False)
    encryption_keys: tuple[str, ...] = field(repr=False)
    api_key_pepper: str = field(repr=False)
    api_key_last_used_resolution: float
    metrics_token: str = field(repr=False)
    """The bearer token `GET /metrics` asks for; empty: it is open."""


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP edge: body size and nesting, CORS origins, trusted proxies."""

    max_request_bytes: int
    max_json_depth: int
    """Arrays and objects a JSON body (or an agent's answer) may nest; deeper is refused before any walk."""
    allowed_origins: tuple[str, ...]
    proxy_count: int


@dataclass(frozen=True)
class HealthSettings:
    """The health routes."""

    engine_cache: float
    """Seconds `/health/ready` reuses one engine ping (a flood of probes pings the engine once per period)."""


@dataclass(frozen=True)
class RateLimitSettings:
    """Requests a minute per caller on `/v1`, and login + registration attempts per address."""

    per_minute: int
    auth_per_minute: int


@dataclass(frozen=True)
class AgentSettings:
    """Defaults and maxima of what an agent and a deployment may ask for."""

    default_cpu: float
    default_memory_mb: int
    max_cpu: float
    max_memory_mb: int
    max_replicas: int
    allow_local_git_sources: bool
    allowed_registries: tuple[str, ...] = ()
    """Registries (`host[:port]`) an image may name although they are loopback or private (`ALLOWED_REGISTRIES`)."""


@dataclass(frozen=True)
class QuotaSettings:
    """What one user may hold at once (`QUOTA_*`; `services.quotas` applies them, admins are exempt)."""

    agents: int = 100
    """Agents the user owns."""
    replicas: int = 50
    """Desired replicas summed over the user's live (non-killed) deployments."""
    memory_mb: int = 32768
    """Replicas × memory_mb of the resolved resources, summed over the user's live deployments."""


@dataclass(frozen=True)
class InteractSettings:
    """Calls to an agent's replicas."""

    timeout: float
    connect_timeout: float
    max_response_bytes: int
    replica_host: str
    stream_max: float = 600.0
    """Seconds a streamed answer may last (`INTERACT_STREAM_MAX_SECONDS`); then the service ends it."""
    streams_per_worker: int = 2
    """Streamed calls one worker process serves at once (`INTERACT_STREAMS_PER_WORKER`): each holds a thread."""


@dataclass(frozen=True)
class LogSettings:
    """Following runtime logs, and the stored build log."""

    follow_poll: float
    follow_max: float
    follow_max_per_user: int
    """Open `follow=true` streams a user may have at once, across every worker (`log_streams` rows)."""
    follow_lease: float
    """How long an open stream's slot counts without being renewed (a crashed worker's streams lapse)."""
    build_log_max_bytes: int
    line_max_bytes: int


@dataclass(frozen=True)
class AlertSettings:
    """When an alert opens: thresholds, and the window rates are measured over."""

    crash_loop_restarts: int
    memory_high_ratio: float
    hallucination_rate: float
    error_rate: float
    min_samples: int
    window_minutes: float
    event_rule_seconds: float
    """An evaluation runs its deployment's hallucination rule at most this often per process (the rule
    aggregates the whole window); the reconciler's sampling round runs it as well."""


@dataclass(frozen=True)
class WebhookSettings:
    """Delivering alerts to webhooks: which targets, how long, how often."""

    allow_private_targets: bool
    timeout: float
    """One deadline per attempt: resolving, connecting, sending and reading the answer."""
    max_attempts: int
    retry_base: float
    max_response_bytes: int
    """At most this much of an answer's body is read."""


@dataclass(frozen=True)
class ReconcileSettings:
    """Every time-based rule of the reconciler (tests shrink them to seconds)."""

    resync: float
    tick: float
    progress_deadline: float
    startup_grace: float
    backoff_base: float
    backoff_max: float
    restart_budget: int
    stable_seconds: float
    stop_timeout: float
    workers: int
    port_range: tuple[int, int]
    replica_host: str
    port_probe_timeout: float = 1.0
    """Seconds a probe of a port on a remote `REPLICA_HOST` may take (`reconciler.ports`)."""
    sample_every: float = 15.0
    sample_retention_hours: float = 24.0
    alert_window: float = 3600.0
    """Seconds an OOM kill counts for the memory alert (`ALERT_WINDOW_MINUTES`)."""
    log_keep_lines: int = 1000
    """The last lines of a replica's container stored before it is removed (0: none)."""
    log_retention_days: float = 7.0
    """Stored lines older than this are deleted."""
    log_prune_every: float = 3600.0
    """Seconds between two deletions of stored lines past their retention."""
    invocation_retention_days: float = 30.0
    """Invocation records older than this are deleted (`INVOCATION_RETENTION_DAYS`)."""
    invocation_prune_every: float = 3600.0
    """Seconds between two deletions of invocation records past their retention (`INVOCATION_PRUNE_SECONDS`)."""
    builds_per_user: int = 2
    """Builds of one user's deployments that run at once (`BUILDS_PER_USER`)."""
    build_slots: int = 4
    """Builds that run at once in all (`BUILD_SLOTS`)."""
    auto_rollback: bool = True
    """A failed rolling update whose previous release still serves goes back to it (`AUTO_ROLLBACK`)."""
    release_images_kept: int = 5
    max_surge: int = 1
    """Replicas of a rolling update replaced at once, start-first (`ROLLOUT_MAX_SURGE`)."""
    """Built images of this many of a deployment's newest releases stay on the engine (`RELEASE_IMAGES_KEPT`)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ReconcileSettings:
        """The reconciler's part of `settings_from(config)`."""
        return settings_from(config).reconcile


@dataclass(frozen=True)
class LoopSettings:
    """How the reconciler's loop leads, retries and reports that it is alive."""

    standby_retry: float = 2.0
    """How often a standby tries to take the lead, and a leader checks that it still holds it."""
    retry_base: float = 1.0
    """The first wait after a failure of leadership, wake-ups or a job; doubled per failure after it."""
    retry_max: float = 30.0
    """The longest wait between retries."""
    connect_timeout: int = 5
    """Seconds to wait for PostgreSQL to accept the leader lock's and the wake-ups' connections."""
    engine_backoff_max: float = 30.0
    """The longest wait between passes while the container engine does not answer."""
    stale: float = 60.0
    """Readiness fails when no pass has completed for this long; the heartbeat is written 4 times as often."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LoopSettings:
        """The loop's part of `settings_from(config)`."""
        return settings_from(config).loop


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, grouped by who reads it."""

    environment: str
    http: HttpSettings
    health: HealthSettings
    auth: AuthSettings
    rate_limits: RateLimitSettings
    agents: AgentSettings
    quotas: QuotaSettings
    interact: InteractSettings
    logs: LogSettings
    alerts: AlertSettings
    webhooks: WebhookSettings
    runner: RunnerSettings
    reconcile: ReconcileSettings
    loop: LoopSettings
    stored_text_max: int = 500
    """The longest engine or receiver text stored as an event message, a deployment's `error` or a
    webhook delivery's `error` (`STORED_TEXT_MAX_CHARS`); longer ones are cut, one line."""

    @property
    def production(self) -> bool:
        """`ENVIRONMENT=production`: what development allows (a first account made admin) does not hold."""
        return self.environment == "production"


class _Reader:
    """Typed reads of a configuration mapping; a missing key or a value of the wrong type is a ConfigError."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config

    def raw(self, key: str, default: Any = None) -> Any:
        return self._config.get(key, default)

    def _required(self, key: str) -> Any:
        if key not in self._config:
            raise ConfigError(f"{key} is not set")
        return self._config[key]

    def integer(self, key: str) -> int:
        value = self._required(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value

    def number(self, key: str) -> float:
        value = self._required(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)

    def boolean(self, key: str) -> bool:
        value = self._required(key)
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be a boolean (true/false), got {value!r}")
        return value

    def text(self, key: str, *, default: str | None = None) -> str:
        """A string; with a `default`, the key may be missing or None."""
        value = self._required(key) if default is None else self._config.get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value

    def word(self, key: str, *, default: str) -> str:
        """A keyword setting, compared without case or surrounding space."""
        return self.text(key, default=default).strip().lower()

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._config.get(key) or ()
        if isinstance(value, str) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return tuple(value)

    def lifetime(self, key: str) -> timedelta:
        """A token lifetime: a `timedelta`, or whole seconds (as flask-jwt-extended accepts)."""
        value = self._required(key)
        if isinstance(value, timedelta):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return timedelta(seconds=value)
        raise ConfigError(f"{key} must be a number of seconds, got {value!r}")


def settings_from(config: Mapping[str, Any]) -> Settings:
    """The service's settings from a Flask config mapping (`load_config` output plus overrides).

    Raises:
        ConfigError: a value of the wrong type; production without a strong SECRET_KEY; an unknown
            RUNNER or DOCKER_NETWORK_MODE; a bad HOST_PORT_RANGE; RUNNER=swarm with bridge networking
            or more replicas than a Swarm service may have; agent defaults above the maxima; host
            networking (DOCKER_NETWORK_MODE=host, or RUNNER=swarm) in production without HOST_NETWORK_ALLOWED.
    """
    read = _Reader(config)
    environment = read.word("ENVIRONMENT", default="development")
    secret_key = read.text("SECRET_KEY", default="")
    if environment == "production":
        if not secret_key:
            raise ConfigError("SECRET_KEY is required when ENVIRONMENT=production")
        if secret_key == DEV_SECRET_KEY or len(secret_key) < 32:
            raise ConfigError("SECRET_KEY must be a random string of at least 32 characters in production")
    runner = _runner_settings(read, production=environment == "production")
    agents = AgentSettings(
        default_cpu=read.number("AGENT_DEFAULT_CPU"),
        default_memory_mb=read.integer("AGENT_DEFAULT_MEMORY_MB"),
        max_cpu=read.number("AGENT_MAX_CPU"),
        max_memory_mb=read.integer("AGENT_MAX_MEMORY_MB"),
        max_replicas=read.integer("MAX_REPLICAS"),
        allow_local_git_sources=read.boolean("ALLOW_LOCAL_GIT_SOURCES"),
        allowed_registries=tuple(entry.lower() for entry in read.texts("ALLOWED_REGISTRIES")),
    )
    if runner.backend == "swarm" and agents.max_replicas > SWARM_MAX_REPLICAS:
        raise ConfigError(f"RUNNER=swarm runs at most {SWARM_MAX_REPLICAS} replicas; lower MAX_REPLICAS")
    if read.number("LOG_FOLLOW_LEASE_SECONDS") <= read.number("LOG_FOLLOW_POLL_SECONDS"):
        raise ConfigError("LOG_FOLLOW_LEASE_SECONDS must exceed LOG_FOLLOW_POLL_SECONDS (a stream renews once a poll)")
    if agents.default_cpu > agents.max_cpu:
        raise ConfigError("AGENT_DEFAULT_CPU must not exceed AGENT_MAX_CPU")
    if agents.default_memory_mb > agents.max_memory_mb:
        raise ConfigError("AGENT_DEFAULT_MEMORY_MB must not exceed AGENT_MAX_MEMORY_MB")
    return Settings(
        environment=environment,
        http=HttpSettings(
            max_request_bytes=read.integer("MAX_CONTENT_LENGTH"),
            max_json_depth=read.integer("MAX_JSON_DEPTH"),
            allowed_origins=read.texts("ALLOWED_ORIGINS"),
            proxy_count=read.integer("PROXY_COUNT"),
        ),
        health=HealthSettings(engine_cache=read.number("HEALTH_ENGINE_CACHE_SECONDS")),
        auth=_auth_settings(read, secret_key),
        rate_limits=RateLimitSettings(
            per_minute=read.integer("RATE_LIMIT_PER_MINUTE"), auth_per_minute=read.integer("AUTH_RATE_LIMIT_PER_MINUTE")
        ),
        agents=agents,
        quotas=QuotaSettings(
            agents=read.integer("QUOTA_AGENTS"),
            replicas=read.integer("QUOTA_REPLICAS"),
            memory_mb=read.integer("QUOTA_MEMORY_MB"),
        ),
        interact=InteractSettings(
            timeout=read.number("INTERACT_TIMEOUT_SECONDS"),
            connect_timeout=read.number("INTERACT_CONNECT_TIMEOUT_SECONDS"),
            max_response_bytes=read.integer("INTERACT_MAX_RESPONSE_BYTES"),
            stream_max=read.number("INTERACT_STREAM_MAX_SECONDS"),
            streams_per_worker=read.integer("INTERACT_STREAMS_PER_WORKER"),
            replica_host=runner.replica_host,
        ),
        logs=LogSettings(
            follow_poll=read.number("LOG_FOLLOW_POLL_SECONDS"),
            follow_max=read.number("LOG_FOLLOW_MAX_SECONDS"),
            follow_max_per_user=read.integer("LOG_FOLLOW_MAX_PER_USER"),
            follow_lease=read.number("LOG_FOLLOW_LEASE_SECONDS"),
            build_log_max_bytes=read.integer("BUILD_LOG_MAX_BYTES"),
            line_max_bytes=runner.log_line_max_bytes,
        ),
        alerts=AlertSettings(
            crash_loop_restarts=read.integer("ALERT_CRASH_LOOP_RESTARTS"),
            memory_high_ratio=read.number("ALERT_MEMORY_HIGH_RATIO"),
            hallucination_rate=read.number("ALERT_HALLUCINATION_RATE"),
            error_rate=read.number("ALERT_ERROR_RATE"),
            min_samples=read.integer("ALERT_MIN_SAMPLES"),
            window_minutes=read.number("ALERT_WINDOW_MINUTES"),
            event_rule_seconds=read.number("ALERT_EVENT_RULE_SECONDS"),
        ),
        webhooks=WebhookSettings(
            allow_private_targets=read.boolean("WEBHOOK_ALLOW_PRIVATE_TARGETS"),
            timeout=read.number("WEBHOOK_TIMEOUT_SECONDS"),
            max_attempts=read.integer("WEBHOOK_MAX_ATTEMPTS"),
            retry_base=read.number("WEBHOOK_RETRY_BASE_SECONDS"),
            max_response_bytes=read.integer("WEBHOOK_MAX_RESPONSE_BYTES"),
        ),
        runner=runner,
        reconcile=_reconcile_settings(read, runner),
        loop=LoopSettings(
            standby_retry=read.number("RECONCILER_STANDBY_RETRY_SECONDS"),
            retry_base=read.number("RECONCILER_RETRY_BASE_SECONDS"),
            retry_max=read.number("RECONCILER_RETRY_MAX_SECONDS"),
            connect_timeout=read.integer("RECONCILER_DB_CONNECT_TIMEOUT_SECONDS"),
            engine_backoff_max=read.number("ENGINE_BACKOFF_MAX_SECONDS"),
            stale=read.number("RECONCILER_STALE_SECONDS"),
        ),
        stored_text_max=read.integer("STORED_TEXT_MAX_CHARS"),
    )


def startup_warnings(config: Mapping[str, Any]) -> list[str]:
    """What a production start should say out loud: settings that work, but not as an operator expects."""
    if config.get("ENVIRONMENT") != "production":
        return []
    warnings = []
    if config.get("REGISTRATION_ENABLED"):
        warnings.append(
            "REGISTRATION_ENABLED=true in production: anyone who reaches the service can make an account (a plain "
            "user: in production registration never makes an admin, not even the first account). Create the admin "
            "with `flask --app app create-admin`, and set REGISTRATION_ENABLED=false unless sign-up is meant to be "
            "open."
        )
    workers = int(config.get("WEB_CONCURRENCY") or 1)
    storage = str(config.get("RATELIMIT_STORAGE_URI") or "memory://")
    if config.get("RATELIMIT_ENABLED") and storage.startswith("memory://") and workers > 1:
        warnings.append(
            f"RATELIMIT_STORAGE_URI={storage} with WEB_CONCURRENCY={workers}: each worker counts its own limits, "
            f"so a caller gets up to {workers}x RATE_LIMIT_PER_MINUTE. Set RATELIMIT_STORAGE_URI=redis://... to "
            "share them."
        )
    return warnings


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _runner_settings(read: _Reader, *, production: bool) -> RunnerSettings:
    """The runner's settings. Host networking shares the host's network with every replica (one tenant):
    production allows it only with `HOST_NETWORK_ALLOWED=true`; `auto` is resolved (and refused) by the runner.
    """
    network_mode = read.word("DOCKER_NETWORK_MODE", default="auto")
    if network_mode not in NETWORK_MODES:
        raise ConfigError("DOCKER_NETWORK_MODE must be auto, bridge or host")
    backend = read.word("RUNNER", default="docker")
    if backend not in RUNNERS:
        raise ConfigError(f"RUNNER must be docker or swarm, got {backend!r}")
    if backend == "swarm" and network_mode == "bridge":
        raise ConfigError("RUNNER=swarm uses host networking; DOCKER_NETWORK_MODE must be host or auto")
    host_network_allowed = not production or read.boolean("HOST_NETWORK_ALLOWED")
    if not host_network_allowed and (network_mode == "host" or backend == "swarm"):
        uses = "DOCKER_NETWORK_MODE=host" if network_mode == "host" else "RUNNER=swarm (always host networking)"
        raise ConfigError(
            f"{uses} shares the host's network with every replica, so it is refused in production: use "
            "DOCKER_NETWORK_MODE=bridge, or set HOST_NETWORK_ALLOWED=true for a single-tenant service"
        )
    build_network = read.word("BUILD_NETWORK", default="default")
    if build_network not in BUILD_NETWORKS:
        raise ConfigError(f"BUILD_NETWORK must be default or none, got {build_network!r}")
    replica_host = read.text("REPLICA_HOST")
    publish_host = read.text("PUBLISH_HOST", default="") or replica_host
    if network_mode != "host" and not _is_ip(publish_host):
        raise ConfigError(
            f"Bridge networking publishes replicas' ports on PUBLISH_HOST, which must be an IP address of the "
            f"engine host; REPLICA_HOST={replica_host!r} is a name: set PUBLISH_HOST to that host's address "
            "(or DOCKER_NETWORK_MODE=host)"
        )
    runner = RunnerSettings(
        backend=backend,
        network_mode=network_mode,
        docker_timeout=read.number("DOCKER_TIMEOUT"),
        namespace=read.text("ENGINE_NAMESPACE", default="") or DEFAULT_NAMESPACE,
        pull_timeout=read.number("PULL_TIMEOUT_SECONDS"),
        pids_limit=read.integer("CONTAINER_PIDS_LIMIT"),
        default_uid=read.integer("CONTAINER_DEFAULT_UID"),
        default_gid=read.integer("CONTAINER_DEFAULT_GID"),
        log_max_size=read.text("CONTAINER_LOG_MAX_SIZE"),
        log_max_file=read.integer("CONTAINER_LOG_MAX_FILE"),
        log_line_max_bytes=read.integer("LOG_LINE_MAX_BYTES"),
        tmpfs_mb=read.integer("CONTAINER_TMPFS_SIZE_MB"),
        stop_timeout=read.number("CONTAINER_STOP_TIMEOUT"),
        build_timeout=read.number("BUILD_TIMEOUT_SECONDS"),
        clone_timeout=read.number("GIT_CLONE_TIMEOUT_SECONDS"),
        build_memory_mb=read.integer("BUILD_MEMORY_MB"),
        build_cpus=read.number("BUILD_CPUS"),
        build_network=build_network,
        git_max_repo_mb=read.integer("GIT_MAX_REPO_MB"),
        allowed_git_hosts=tuple(entry.lower() for entry in read.texts("ALLOWED_GIT_HOSTS")),
        host_network_allowed=host_network_allowed,
        replica_host=replica_host,
        publish_host=publish_host,
        registry=read.text("SWARM_REGISTRY", default="").strip(),
        registry_username=read.text("SWARM_REGISTRY_USERNAME", default=""),
        registry_password=read.text("SWARM_REGISTRY_PASSWORD", default=""),
        ssh_known_hosts=read.text("DOCKER_SSH_KNOWN_HOSTS", default=""),
        ssh_identity_file=read.text("DOCKER_SSH_IDENTITY_FILE", default=""),
    )
    try:
        check_default_user(runner)
    except RunnerConfigError as exc:
        raise ConfigError(str(exc)) from exc
    return runner


DEFAULT_ROLES = ("developer", "user")
"""What `DEFAULT_ROLE` may name: never `admin` (that would hand the service to whoever registers)."""


def _default_role(read: _Reader) -> str:
    role = read.word("DEFAULT_ROLE", default="developer")
    if role not in DEFAULT_ROLES:
        raise ConfigError(f"DEFAULT_ROLE must be one of {', '.join(DEFAULT_ROLES)}, got {role!r}")
    return role


def _auth_settings(read: _Reader, secret_key: str) -> AuthSettings:
    algorithms = read.raw("JWT_DECODE_ALGORITHMS") or [read.raw("JWT_ALGORITHM") or JWT_ALGORITHM]
    leeway = read.raw("JWT_DECODE_LEEWAY", 0)
    if isinstance(leeway, timedelta):
        leeway = leeway.total_seconds()
    return AuthSettings(
        tokens=TokenSettings(
            secret_key=read.text("JWT_SECRET_KEY", default="") or secret_key,
            algorithms=tuple(algorithms),
            leeway=leeway,
        ),
        access_token_expires=read.lifetime("JWT_ACCESS_TOKEN_EXPIRES"),
        refresh_token_expires=read.lifetime("JWT_REFRESH_TOKEN_EXPIRES"),
        registration_enabled=read.boolean("REGISTRATION_ENABLED"),
        default_role=_default_role(read),
        password_time_cost=read.integer("PASSWORD_HASH_TIME_COST"),
        password_memory_kib=read.integer("PASSWORD_HASH_MEMORY_KIB"),
        secret_key=secret_key,
        encryption_keys=read.texts("SECRETS_ENCRYPTION_KEYS"),
        api_key_pepper=read.text("API_KEY_PEPPER", default=""),
        api_key_last_used_resolution=read.number("API_KEY_LAST_USED_RESOLUTION_SECONDS"),
        metrics_token=read.text("METRICS_TOKEN", default=""),
    )


def _reconcile_settings(read: _Reader, runner: RunnerSettings) -> ReconcileSettings:
    return ReconcileSettings(
        resync=read.number("RECONCILE_INTERVAL_SECONDS"),
        tick=read.number("RECONCILE_TICK_SECONDS"),
        progress_deadline=read.number("PROGRESS_DEADLINE_SECONDS"),
        startup_grace=read.number("STARTUP_GRACE_SECONDS"),
        backoff_base=read.number("RESTART_BACKOFF_BASE_SECONDS"),
        backoff_max=read.number("RESTART_BACKOFF_MAX_SECONDS"),
        restart_budget=read.integer("RESTART_BUDGET"),
        stable_seconds=read.number("RESTART_STABLE_SECONDS"),
        stop_timeout=runner.stop_timeout,
        workers=read.integer("RECONCILE_WORKERS"),
        port_range=parse_port_range(read.text("HOST_PORT_RANGE")),
        replica_host=runner.replica_host,
        port_probe_timeout=read.number("PORT_PROBE_TIMEOUT_SECONDS"),
        sample_every=read.number("METRICS_SAMPLE_SECONDS"),
        sample_retention_hours=read.number("METRICS_RETENTION_HOURS"),
        alert_window=read.number("ALERT_WINDOW_MINUTES") * 60,
        log_keep_lines=read.integer("LOG_KEEP_LINES_PER_REPLICA"),
        log_retention_days=read.number("LOG_RETENTION_DAYS"),
        log_prune_every=read.number("LOG_PRUNE_SECONDS"),
        invocation_retention_days=read.number("INVOCATION_RETENTION_DAYS"),
        invocation_prune_every=read.number("INVOCATION_PRUNE_SECONDS"),
        builds_per_user=read.integer("BUILDS_PER_USER"),
        auto_rollback=read.boolean("AUTO_ROLLBACK"),
        release_images_kept=read.integer("RELEASE_IMAGES_KEPT"),
        max_surge=read.integer("ROLLOUT_MAX_SURGE"),
        build_slots=read.integer("BUILD_SLOTS"),
    )


def settings_for(app: Flask) -> Settings:
    """The settings `create_app` built for `app`."""
    settings: Settings = app.extensions[EXTENSION_KEY]
    return settings


def current_settings() -> Settings:
    """The settings of the application handling the current request (or of the pushed app context)."""
    settings: Settings = current_app.extensions[EXTENSION_KEY]
    return settings
