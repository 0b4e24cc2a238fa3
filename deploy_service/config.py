"""Configuration read from the environment.

`load_config` turns an environment mapping into a plain dict of Flask config keys, with safe
defaults for development. Nothing here fails at import time: the application factory turns the
mapping into typed settings (`settings.settings_from`, which also refuses unsafe values), so a
production process without a `SECRET_KEY` refuses to start while tests and tooling can still import
the package. Only this module and the factory read configuration keys; everything else takes the
typed settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from deploy_service.settings import DEV_SECRET_KEY, ConfigError, parse_port_range, settings_from

__all__ = [
    "DEV_SECRET_KEY",
    "ENVIRONMENTS",
    "ConfigError",
    "load_config",
    "normalize_database_url",
    "parse_port_range",
    "validate_config",
]

ENVIRONMENTS = ("development", "staging", "production")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _list(env: Mapping[str, str], name: str) -> list[str]:
    return [item.strip() for item in env.get(name, "").split(",") if item.strip()]


def normalize_database_url(url: str) -> str:
    """Map the URLs that hosting providers hand out onto the driver this service ships with.

    Render and Heroku give `postgres://...`; SQLAlchemy wants `postgresql+psycopg://...`.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config dict from environment variables (see README for each one)."""
    env = os.environ if env is None else env
    environment = env.get("ENVIRONMENT", "development").strip().lower()
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}")
    production = environment == "production"
    secret_key = env.get("SECRET_KEY", "")
    database_url = normalize_database_url(env.get("DATABASE_URL", "") or "sqlite:///deploy_service.db")

    return {
        "ENVIRONMENT": environment,
        "DEBUG": _bool(env, "DEBUG", False),
        "HOST": env.get("HOST", "0.0.0.0"),
        "PORT": _int(env, "PORT", 5000, minimum=1),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO").upper(),
        "SECRET_KEY": secret_key or (None if production else DEV_SECRET_KEY),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLITE_BUSY_TIMEOUT_MS": _int(env, "SQLITE_BUSY_TIMEOUT_MS", 30000),
        "DB_POOL_SIZE": _int(env, "DB_POOL_SIZE", 5, minimum=1),
        "ALLOWED_ORIGINS": _list(env, "ALLOWED_ORIGINS"),
        "MAX_CONTENT_LENGTH": _int(env, "MAX_REQUEST_BYTES", 1024 * 1024, minimum=1024),
        "MAX_JSON_DEPTH": _int(env, "MAX_JSON_DEPTH", 64, minimum=2),
        "HEALTH_ENGINE_CACHE_SECONDS": _float(env, "HEALTH_ENGINE_CACHE_SECONDS", 2.0),
        "METRICS_TOKEN": env.get("METRICS_TOKEN", "").strip(),
        "REGISTRATION_ENABLED": _bool(env, "REGISTRATION_ENABLED", True),
        "DEFAULT_ROLE": env.get("DEFAULT_ROLE", "developer").strip().lower(),
        "RATELIMIT_ENABLED": _bool(env, "RATELIMIT_ENABLED", True),
        "RATE_LIMIT_PER_MINUTE": _int(env, "RATE_LIMIT_PER_MINUTE", 600, minimum=1),
        "AUTH_RATE_LIMIT_PER_MINUTE": _int(env, "AUTH_RATE_LIMIT_PER_MINUTE", 10, minimum=1),
        "RATE_LIMIT_BATCH_MAX": _int(env, "RATE_LIMIT_BATCH_MAX", 64, minimum=1),
        "RATELIMIT_STORAGE_URI": env.get("RATELIMIT_STORAGE_URI", "memory://"),
        "WEB_CONCURRENCY": _int(env, "WEB_CONCURRENCY", 2, minimum=1),
        "RATELIMIT_HEADERS_ENABLED": True,
        "PROXY_COUNT": _int(env, "PROXY_COUNT", 0),
        "JWT_SECRET_KEY": env.get("JWT_SECRET_KEY") or None,
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=_int(env, "JWT_ACCESS_TOKEN_EXPIRES", 900, minimum=1)),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(
            seconds=_int(env, "JWT_REFRESH_TOKEN_EXPIRES", 30 * 24 * 3600, minimum=1)
        ),
        "SECRETS_ENCRYPTION_KEYS": _list(env, "SECRETS_ENCRYPTION_KEYS"),
        "API_KEY_PEPPER": env.get("API_KEY_PEPPER", ""),
        "API_KEY_LAST_USED_RESOLUTION_SECONDS": _float(env, "API_KEY_LAST_USED_RESOLUTION_SECONDS", 60.0),
        "INTERACT_TIMEOUT_SECONDS": _float(env, "INTERACT_TIMEOUT_SECONDS", 30.0, minimum=0.01),
        "INTERACT_CONNECT_TIMEOUT_SECONDS": _float(env, "INTERACT_CONNECT_TIMEOUT_SECONDS", 3.0, minimum=0.01),
        "INTERACT_MAX_RESPONSE_BYTES": _int(env, "INTERACT_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, minimum=1024),
        "INTERACT_STREAM_MAX_SECONDS": _float(env, "INTERACT_STREAM_MAX_SECONDS", 600.0, minimum=0.01),
        "INTERACT_STREAMS_PER_WORKER": _int(env, "INTERACT_STREAMS_PER_WORKER", 2, minimum=1),
        "PASSWORD_HASH_TIME_COST": _int(env, "PASSWORD_HASH_TIME_COST", 3, minimum=1),
        "PASSWORD_HASH_MEMORY_KIB": _int(env, "PASSWORD_HASH_MEMORY_KIB", 65536, minimum=8),
        "AGENT_DEFAULT_CPU": _float(env, "AGENT_DEFAULT_CPU", 0.5),
        "AGENT_DEFAULT_MEMORY_MB": _int(env, "AGENT_DEFAULT_MEMORY_MB", 512, minimum=6),
        "AGENT_MAX_CPU": _float(env, "AGENT_MAX_CPU", 4.0),
        "AGENT_MAX_MEMORY_MB": _int(env, "AGENT_MAX_MEMORY_MB", 8192, minimum=6),
        "QUOTA_AGENTS": _int(env, "QUOTA_AGENTS", 100),
        "QUOTA_REPLICAS": _int(env, "QUOTA_REPLICAS", 50),
        "QUOTA_MEMORY_MB": _int(env, "QUOTA_MEMORY_MB", 32768),
        "ALLOWED_REGISTRIES": _list(env, "ALLOWED_REGISTRIES"),
        "ALLOWED_GIT_HOSTS": _list(env, "ALLOWED_GIT_HOSTS"),
        "ALLOW_LOCAL_GIT_SOURCES": _bool(env, "ALLOW_LOCAL_GIT_SOURCES", False),
        # Deployment engine
        "RUNNER": env.get("RUNNER", "docker").strip().lower(),
        "DOCKER_NETWORK_MODE": env.get("DOCKER_NETWORK_MODE", "auto").strip().lower(),
        "HOST_NETWORK_ALLOWED": _bool(env, "HOST_NETWORK_ALLOWED", False),
        "DOCKER_TIMEOUT": _float(env, "DOCKER_TIMEOUT", 30.0, minimum=1.0),
        "ENGINE_NAMESPACE": env.get("ENGINE_NAMESPACE") or None,
        "DOCKER_SSH_KNOWN_HOSTS": env.get("DOCKER_SSH_KNOWN_HOSTS", "").strip(),
        "DOCKER_SSH_IDENTITY_FILE": env.get("DOCKER_SSH_IDENTITY_FILE", "").strip(),
        "PULL_TIMEOUT_SECONDS": _float(env, "PULL_TIMEOUT_SECONDS", 600.0, minimum=1.0),
        "REPLICA_HOST": env.get("REPLICA_HOST", "127.0.0.1"),
        "PUBLISH_HOST": env.get("PUBLISH_HOST", "").strip(),
        "SWARM_REGISTRY": env.get("SWARM_REGISTRY", "").strip(),
        "SWARM_REGISTRY_USERNAME": env.get("SWARM_REGISTRY_USERNAME", ""),
        "SWARM_REGISTRY_PASSWORD": env.get("SWARM_REGISTRY_PASSWORD", ""),
        "HOST_PORT_RANGE": env.get("HOST_PORT_RANGE", "20000-29999"),
        "PORT_PROBE_TIMEOUT_SECONDS": _float(env, "PORT_PROBE_TIMEOUT_SECONDS", 1.0, minimum=0.01),
        "MAX_REPLICAS": _int(env, "MAX_REPLICAS", 50, minimum=1),
        "CONTAINER_PIDS_LIMIT": _int(env, "CONTAINER_PIDS_LIMIT", 256, minimum=16),
        "CONTAINER_DEFAULT_UID": _int(env, "CONTAINER_DEFAULT_UID", 65532, minimum=1),
        "CONTAINER_DEFAULT_GID": _int(env, "CONTAINER_DEFAULT_GID", 65532, minimum=0),
        "CONTAINER_LOG_MAX_SIZE": env.get("CONTAINER_LOG_MAX_SIZE", "10m"),
        "CONTAINER_LOG_MAX_FILE": _int(env, "CONTAINER_LOG_MAX_FILE", 3, minimum=1),
        "CONTAINER_TMPFS_SIZE_MB": _int(env, "CONTAINER_TMPFS_SIZE_MB", 64, minimum=1),
        "CONTAINER_STOP_TIMEOUT": _float(env, "CONTAINER_STOP_TIMEOUT", 10.0),
        "BUILD_TIMEOUT_SECONDS": _float(env, "BUILD_TIMEOUT_SECONDS", 900.0, minimum=1.0),
        "GIT_CLONE_TIMEOUT_SECONDS": _float(env, "GIT_CLONE_TIMEOUT_SECONDS", 120.0, minimum=1.0),
        "GIT_MAX_REPO_MB": _int(env, "GIT_MAX_REPO_MB", 500, minimum=1),
        "BUILD_MEMORY_MB": _int(env, "BUILD_MEMORY_MB", 2048, minimum=6),
        "BUILD_CPUS": _float(env, "BUILD_CPUS", 2.0, minimum=0.01),
        "BUILD_NETWORK": env.get("BUILD_NETWORK", "default").strip().lower(),
        "BUILDS_PER_USER": _int(env, "BUILDS_PER_USER", 2, minimum=1),
        "RELEASE_IMAGES_KEPT": _int(env, "RELEASE_IMAGES_KEPT", 5, minimum=1),
        "ROLLOUT_MAX_SURGE": _int(env, "ROLLOUT_MAX_SURGE", 1, minimum=1),
        "BUILD_SLOTS": _int(env, "BUILD_SLOTS", 4, minimum=1),
        "BUILD_LOG_MAX_BYTES": _int(env, "BUILD_LOG_MAX_BYTES", 512 * 1024, minimum=1024),
        "RECONCILER_ENABLED": _bool(env, "RECONCILER_ENABLED", True),
        "RECONCILE_INTERVAL_SECONDS": _float(env, "RECONCILE_INTERVAL_SECONDS", 10.0, minimum=0.05),
        "RECONCILE_TICK_SECONDS": _float(env, "RECONCILE_TICK_SECONDS", 1.0, minimum=0.01),
        "RECONCILE_WORKERS": _int(env, "RECONCILE_WORKERS", 8, minimum=1),
        "ENGINE_BACKOFF_MAX_SECONDS": _float(env, "ENGINE_BACKOFF_MAX_SECONDS", 30.0, minimum=0.1),
        "RECONCILER_STANDBY_RETRY_SECONDS": _float(env, "RECONCILER_STANDBY_RETRY_SECONDS", 2.0, minimum=0.01),
        "RECONCILER_RETRY_BASE_SECONDS": _float(env, "RECONCILER_RETRY_BASE_SECONDS", 1.0, minimum=0.01),
        "RECONCILER_RETRY_MAX_SECONDS": _float(env, "RECONCILER_RETRY_MAX_SECONDS", 30.0, minimum=0.01),
        "RECONCILER_DB_CONNECT_TIMEOUT_SECONDS": _int(env, "RECONCILER_DB_CONNECT_TIMEOUT_SECONDS", 5, minimum=1),
        "RECONCILER_STALE_SECONDS": _float(env, "RECONCILER_STALE_SECONDS", 60.0, minimum=1.0),
        "PROGRESS_DEADLINE_SECONDS": _float(env, "PROGRESS_DEADLINE_SECONDS", 300.0, minimum=0.1),
        "STARTUP_GRACE_SECONDS": _float(env, "STARTUP_GRACE_SECONDS", 3.0),
        "RESTART_BACKOFF_BASE_SECONDS": _float(env, "RESTART_BACKOFF_BASE_SECONDS", 1.0, minimum=0.01),
        "RESTART_BACKOFF_MAX_SECONDS": _float(env, "RESTART_BACKOFF_MAX_SECONDS", 300.0, minimum=0.01),
        "RESTART_BUDGET": _int(env, "RESTART_BUDGET", 5),
        "RESTART_STABLE_SECONDS": _float(env, "RESTART_STABLE_SECONDS", 600.0, minimum=0.1),
        "AUTO_ROLLBACK": _bool(env, "AUTO_ROLLBACK", True),
        "METRICS_SAMPLE_SECONDS": _float(env, "METRICS_SAMPLE_SECONDS", 15.0, minimum=0.05),
        "METRICS_RETENTION_HOURS": _float(env, "METRICS_RETENTION_HOURS", 24.0, minimum=0.001),
        "ALERT_CRASH_LOOP_RESTARTS": _int(env, "ALERT_CRASH_LOOP_RESTARTS", 3, minimum=1),
        "ALERT_MEMORY_HIGH_RATIO": _float(env, "ALERT_MEMORY_HIGH_RATIO", 0.9, minimum=0.01),
        "ALERT_HALLUCINATION_RATE": _float(env, "ALERT_HALLUCINATION_RATE", 0.3, minimum=0.0),
        "ALERT_ERROR_RATE": _float(env, "ALERT_ERROR_RATE", 0.2, minimum=0.0),
        "ALERT_MIN_SAMPLES": _int(env, "ALERT_MIN_SAMPLES", 10, minimum=1),
        "ALERT_WINDOW_MINUTES": _float(env, "ALERT_WINDOW_MINUTES", 60.0, minimum=0.01),
        "ALERT_EVENT_RULE_SECONDS": _float(env, "ALERT_EVENT_RULE_SECONDS", 5.0, minimum=0.0),
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": _bool(env, "WEBHOOK_ALLOW_PRIVATE_TARGETS", False),
        "WEBHOOK_TIMEOUT_SECONDS": _float(env, "WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        "WEBHOOK_MAX_ATTEMPTS": _int(env, "WEBHOOK_MAX_ATTEMPTS", 6, minimum=1),
        "WEBHOOK_MAX_RESPONSE_BYTES": _int(env, "WEBHOOK_MAX_RESPONSE_BYTES", 65536, minimum=0),
        "WEBHOOK_RETRY_BASE_SECONDS": _float(env, "WEBHOOK_RETRY_BASE_SECONDS", 10.0, minimum=0.01),
        "LOG_KEEP_LINES_PER_REPLICA": _int(env, "LOG_KEEP_LINES_PER_REPLICA", 1000, minimum=0),
        "LOG_RETENTION_DAYS": _float(env, "LOG_RETENTION_DAYS", 7.0, minimum=0.0001),
        "LOG_PRUNE_SECONDS": _float(env, "LOG_PRUNE_SECONDS", 3600.0, minimum=0.05),
        "INVOCATION_RETENTION_DAYS": _float(env, "INVOCATION_RETENTION_DAYS", 30.0, minimum=0.0001),
        "INVOCATION_PRUNE_SECONDS": _float(env, "INVOCATION_PRUNE_SECONDS", 3600.0, minimum=0.05),
        "LOG_FOLLOW_POLL_SECONDS": _float(env, "LOG_FOLLOW_POLL_SECONDS", 1.0, minimum=0.01),
        "LOG_FOLLOW_MAX_SECONDS": _float(env, "LOG_FOLLOW_MAX_SECONDS", 3600.0, minimum=1.0),
        "LOG_FOLLOW_MAX_PER_USER": _int(env, "LOG_FOLLOW_MAX_PER_USER", 4, minimum=1),
        "LOG_FOLLOW_LEASE_SECONDS": _float(env, "LOG_FOLLOW_LEASE_SECONDS", 60.0, minimum=5.0),
        "LOG_LINE_MAX_BYTES": _int(env, "LOG_LINE_MAX_BYTES", 16 * 1024, minimum=256),
        "STORED_TEXT_MAX_CHARS": _int(env, "STORED_TEXT_MAX_CHARS", 500, minimum=80),
        "REDOC_JS_URL": env.get("REDOC_JS_URL", "/redoc-ui/redoc.standalone.js"),
    }


def validate_config(config: Mapping[str, Any]) -> None:
    """Refuse settings that must never reach a running service (see `settings.settings_from`).

    Raises:
        ConfigError: production without a SECRET_KEY, a weak production key, an unknown RUNNER,
            RUNNER=swarm with bridge networking or more than 99 replicas allowed, a value of the wrong type.
    """
    settings_from(config)
