"""render.yaml, read as Render reads it: the settings it gives the service start cleanly and as the README says.

Render itself cannot run here; what can go wrong in the file can be checked: every variable it sets is
one the service documents, the service accepts the values (with stand-ins for what the operator fills
in), a production start with them warns of nothing, and the wiring the README promises is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploy_service.config import load_config
from deploy_service.settings import settings_from, startup_warnings

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT = yaml.safe_load((ROOT / "render.yaml").read_text())
# What the operator types into the dashboard (`sync: false`), and what Render fills from its resources.
OPERATOR = {
    "SECRETS_ENCRYPTION_KEYS": "x1S2ruhQ7jzPJq8Jq2c4b5bR2vYQJ8m1cK2n3o4p5q0=",
    "DOCKER_HOST": "tcp://10.0.0.5:2376",
    "DOCKER_SSH_KNOWN_HOSTS": "",
    "DOCKER_SSH_IDENTITY_FILE": "",
    "REPLICA_HOST": "10.0.0.5",
    "PUBLISH_HOST": "",
    "ALLOWED_ORIGINS": "https://app.example.com",
}
FROM_RENDER = {
    "DATABASE_URL": "postgresql://u:p@db:5432/deploy_service",
    "RATELIMIT_STORAGE_URI": "redis://red-abc:6379",
    "SECRET_KEY": "g" * 44,
}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    groups = {group["name"]: group["envVars"] for group in BLUEPRINT["envVarGroups"]}
    env: dict[str, str] = {}
    for entry in service["envVars"]:
        for item in groups[entry["fromGroup"]] if "fromGroup" in entry else [entry]:
            key = item["key"]
            env[key] = str(item["value"]) if "value" in item else {**OPERATOR, **FROM_RENDER}[key]
    return env


def _service(name: str) -> dict[str, Any]:
    [service] = [s for s in BLUEPRINT["services"] if s["name"] == name]
    return service


def test_every_variable_the_blueprint_sets_is_documented() -> None:
    table = "\n".join(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `"))
    keys = {key for service in BLUEPRINT["services"] if "envVars" in service for key in _environment(service)}
    assert {key for key in keys if f"`{key}`" not in table} == set()


def test_the_web_service_and_the_reconciler_start_with_its_settings_and_no_warning() -> None:
    for name in ("deploy-service", "deploy-service-reconciler"):
        env = _environment(_service(name))
        config = load_config(env)
        settings = settings_from(config)
        assert settings.environment == "production"
        assert settings.runner.network_mode == "bridge"  # never `auto`: see README "Running on Render"
        assert settings.runner.publish_host == settings.runner.replica_host == "10.0.0.5"
        if name == "deploy-service":
            assert startup_warnings(config) == []
            assert settings.auth.registration_enabled is False


def test_the_rate_limits_are_shared_through_the_declared_key_value_instance() -> None:
    [entry] = [e for e in _service("deploy-service")["envVars"] if e.get("key") == "RATELIMIT_STORAGE_URI"]
    source = entry["fromService"]
    assert source["property"] == "connectionString"
    declared = _service(source["name"])
    assert declared["type"] == source["type"] == "keyvalue"
    assert declared["ipAllowList"] == []  # Render's private network only
