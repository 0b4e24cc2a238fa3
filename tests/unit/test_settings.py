"""Typed settings: built once from the configuration, checked, frozen, and what the service reads."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from deploy_service.config import load_config
from deploy_service.errors import ConfigError
from deploy_service.runner.settings import RunnerSettings
from deploy_service.settings import settings_for, settings_from, startup_warnings

README = Path(__file__).resolve().parents[2] / "README.md"
CONFIG_MODULE = Path(__file__).resolve().parents[2] / "deploy_service" / "config.py"


def test_the_defaults_are_the_documented_ones() -> None:
    settings = settings_from(load_config({}))

    assert settings.auth.access_token_expires == timedelta(seconds=900)
    assert settings.auth.registration_enabled is True
    assert (settings.agents.max_cpu, settings.agents.max_replicas) == (4.0, 50)
    assert (settings.webhooks.max_attempts, settings.webhooks.retry_base) == (6, 10.0)
    assert (settings.alerts.min_samples, settings.alerts.window_minutes) == (10, 60.0)
    assert settings.logs.build_log_max_bytes == 512 * 1024
    assert settings.reconcile.port_range == (20000, 29999)
    assert settings.loop.engine_backoff_max == 30.0
    assert settings.runner == RunnerSettings()  # the runner's own defaults are the service's


def test_environment_values_reach_their_group() -> None:
    settings = settings_from(
        load_config(
            {
                "RUNNER": "Swarm",
                "MAX_REPLICAS": "20",
                "SWARM_REGISTRY": " r.example.com/agents ",
                "CONTAINER_STOP_TIMEOUT": "4",
                "REPLICA_HOST": "10.0.0.5",
                "WEBHOOK_ALLOW_PRIVATE_TARGETS": "yes",
                "ALERT_WINDOW_MINUTES": "5",
                "DOCKER_SSH_KNOWN_HOSTS": " /etc/secrets/engine_known_hosts ",
                "DOCKER_SSH_IDENTITY_FILE": "/etc/secrets/engine_key",
            }
        )
    )

    assert (settings.runner.backend, settings.runner.registry) == ("swarm", "r.example.com/agents")
    assert settings.runner.stop_timeout == settings.reconcile.stop_timeout == 4.0
    assert settings.interact.replica_host == settings.reconcile.replica_host == settings.runner.replica_host
    assert settings.webhooks.allow_private_targets is True
    assert settings.alerts.window_minutes == 5.0
    assert settings.runner.ssh_known_hosts == "/etc/secrets/engine_known_hosts"
    assert settings.runner.ssh_identity_file == "/etc/secrets/engine_key"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_REPLICAS", "50"),
        ("MAX_REPLICAS", True),
        ("WEBHOOK_TIMEOUT_SECONDS", "10"),
        ("REGISTRATION_ENABLED", "false"),
        ("ALLOWED_ORIGINS", "https://a.example"),
        ("JWT_ACCESS_TOKEN_EXPIRES", 1.5),
        ("CONTAINER_LOG_MAX_SIZE", 10),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_with_its_name(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        settings_from({**load_config({}), key: value})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DOCKER_NETWORK_MODE": "overlay"}, "DOCKER_NETWORK_MODE"),
        ({"RUNNER": "kubernetes"}, "RUNNER"),
        ({"HOST_PORT_RANGE": "30000-20000"}, "HOST_PORT_RANGE"),
        ({"AGENT_DEFAULT_MEMORY_MB": 9000}, "AGENT_DEFAULT_MEMORY_MB"),
        ({"ENVIRONMENT": "production", "SECRET_KEY": None}, "SECRET_KEY"),
        ({"REPLICA_HOST": "engine.internal"}, "PUBLISH_HOST"),  # bridge (auto) needs an address to publish on
        ({"DOCKER_NETWORK_MODE": "bridge", "PUBLISH_HOST": "engine.internal"}, "PUBLISH_HOST"),
        ({"BUILD_NETWORK": "host"}, "BUILD_NETWORK"),
        ({"DEFAULT_ROLE": "admin"}, "DEFAULT_ROLE"),  # would hand the service to whoever registers
        ({"DEFAULT_ROLE": "owner"}, "DEFAULT_ROLE"),
    ],
)
def test_unsafe_values_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from({**load_config({}), **overrides})


def test_the_build_limits_reach_the_runner() -> None:
    env = {"BUILD_MEMORY_MB": "512", "BUILD_CPUS": "0.5", "BUILD_NETWORK": " None ", "GIT_MAX_REPO_MB": "20"}
    runner = settings_from(load_config(env)).runner

    assert (runner.build_memory_mb, runner.build_cpus, runner.build_network, runner.git_max_repo_mb) == (
        512,
        0.5,
        "none",
        20,
    )
    with pytest.raises(ConfigError, match="BUILD_MEMORY_MB"):
        load_config({"BUILD_MEMORY_MB": "4"})


def test_bridge_mode_publishes_where_the_service_reaches_replicas() -> None:
    """A remote engine's replicas are published on the address the service connects to (REPLICA_HOST),
    not on the engine host's loopback, unless PUBLISH_HOST says otherwise."""
    remote = settings_from(load_config({"REPLICA_HOST": "10.0.0.5"}))
    assert (remote.runner.replica_host, remote.runner.publish_host) == ("10.0.0.5", "10.0.0.5")
    named = settings_from(load_config({"REPLICA_HOST": "engine.internal", "PUBLISH_HOST": "0.0.0.0"}))
    assert (named.runner.replica_host, named.runner.publish_host) == ("engine.internal", "0.0.0.0")
    host_mode = settings_from(load_config({"REPLICA_HOST": "engine.internal", "DOCKER_NETWORK_MODE": "host"}))
    assert host_mode.runner.network_mode == "host"


def test_settings_are_frozen_and_keep_secrets_out_of_their_repr() -> None:
    settings = settings_from(
        load_config({"SECRET_KEY": "s" * 40, "API_KEY_PEPPER": "pepper-value", "SWARM_REGISTRY_PASSWORD": "hunter2"})
    )

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.agents.max_replicas = 1  # type: ignore[misc]
    shown = repr(settings)
    assert "s" * 40 not in shown and "pepper-value" not in shown and "hunter2" not in shown


def test_the_factory_builds_the_settings_once_and_the_runner_from_them(make_app: Any) -> None:
    app: Flask = make_app(MAX_REPLICAS=7, CONTAINER_PIDS_LIMIT=64, ENGINE_NAMESPACE="ns-settings")
    settings = settings_for(app)

    assert settings.agents.max_replicas == 7
    assert settings.runner.pids_limit == 64 and settings.runner.namespace == "ns-settings"
    assert app.extensions["deploy_service.runner"].settings is settings.runner
    assert settings.auth.tokens.secret_key == app.config["JWT_SECRET_KEY"]


def test_a_wrong_override_stops_the_factory(make_app: Any) -> None:
    with pytest.raises(ConfigError, match="ALERT_MIN_SAMPLES"):
        make_app(ALERT_MIN_SAMPLES="ten")


def test_the_default_container_user_is_configurable_and_never_root(make_app: Any) -> None:
    assert settings_from(load_config({})).runner.default_user == "65532:65532"
    chosen = settings_from(load_config({"CONTAINER_DEFAULT_UID": "1001", "CONTAINER_DEFAULT_GID": "0"}))
    assert chosen.runner.default_user == "1001:0"
    with pytest.raises(ConfigError, match="CONTAINER_DEFAULT_UID"):
        load_config({"CONTAINER_DEFAULT_UID": "0"})
    with pytest.raises(ConfigError, match="CONTAINER_DEFAULT_UID"):
        make_app(CONTAINER_DEFAULT_UID=0)
    with pytest.raises(ConfigError, match="CONTAINER_DEFAULT_GID"):
        make_app(CONTAINER_DEFAULT_GID=2**31)


def test_configure_changes_what_the_service_reads_for_one_test(app: Flask, configure: Any) -> None:
    before = settings_for(app)
    changed = configure(WEBHOOK_MAX_ATTEMPTS=2)

    assert settings_for(app) is changed and changed.webhooks.max_attempts == 2
    assert changed.runner == before.runner
    with pytest.raises(AssertionError, match="make_app"):
        configure(CONTAINER_PIDS_LIMIT=32)


def test_every_variable_read_is_in_the_readme_table() -> None:
    read = set(
        re.findall(r'(?:_int|_float|_bool|_list)\(env, "([A-Z_]+)"|env\.get\("([A-Z_]+)"', CONFIG_MODULE.read_text())
    )
    names = {name for pair in read for name in pair if name}
    table = "\n".join(line for line in README.read_text().splitlines() if line.startswith("| `"))

    assert len(names) > 60
    assert {name for name in names if f"`{name}`" not in table} == set()


def test_a_production_start_warns_of_open_registration_and_per_worker_limits() -> None:
    production = {"ENVIRONMENT": "production", "SECRET_KEY": "s" * 40}
    warnings = startup_warnings(load_config({**production, "WEB_CONCURRENCY": "2"}))
    assert [w.split("=")[0] for w in warnings] == ["REGISTRATION_ENABLED", "RATELIMIT_STORAGE_URI"]
    assert "registration never makes an admin" in warnings[0] and "becomes admin" not in warnings[0]
    assert "2x RATE_LIMIT_PER_MINUTE" in warnings[1]
    closed = {**production, "REGISTRATION_ENABLED": "false", "RATELIMIT_STORAGE_URI": "redis://kv:6379"}
    assert startup_warnings(load_config(closed)) == []
    assert startup_warnings(load_config({**production, "REGISTRATION_ENABLED": "false", "WEB_CONCURRENCY": "1"})) == []
    assert startup_warnings(load_config({"WEB_CONCURRENCY": "4"})) == []  # development says nothing
