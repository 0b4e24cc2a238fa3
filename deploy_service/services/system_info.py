"""`GET /v1/system/info`: what this service is and allows, for any logged-in caller.

Cheap enough to poll every second: it reads the settings, the runner's name and its network mode (resolved
once per process when configured `auto`; the configured value while the engine has never answered), and the
database's dialect. No database query and no engine call per request.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.services.engine import runner
from deploy_service.settings import current_settings

ALWAYS = (
    "releases",
    "rollback",
    "git_sources",
    "deploy_from_source",
    "agent_reports",
    "event_feed",
    "webhooks",
    "log_follow",
    "stored_logs",
    "registry_auth",
    "quotas",
)
"""What every instance of this version does; `features` adds what configuration turns on."""


def system_info() -> dict[str, Any]:
    """`{version, runner, network_mode, database, features, limits}`."""
    settings = current_settings()
    engine = runner()
    try:
        network_mode = engine.network_mode()
    except EngineUnavailable:
        network_mode = settings.runner.network_mode
    features = list(ALWAYS)
    if settings.reconcile.auto_rollback:
        features.append("auto_rollback")
    if settings.auth.registration_enabled:
        features.append("registration")
    return {
        "version": current_app.config["VERSION"],
        "runner": engine.name,
        "network_mode": network_mode,
        "database": db.engine.dialect.name,
        "features": sorted(features),
        "limits": {
            "max_replicas": settings.agents.max_replicas,
            "max_cpu": settings.agents.max_cpu,
            "max_memory_mb": settings.agents.max_memory_mb,
        },
    }
