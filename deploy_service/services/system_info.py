"""`GET /v1/system/info`: what this service is and allows, for any logged-in caller; and
`GET /v1/system/status`: whether its parts are healthy and current, for an admin.

Cheap enough to poll every second: it reads the settings, the runner's name and its network mode (resolved
once per process when configured `auto`; the configured value while the engine has never answered), and the
database's dialect. No database query and no engine call per request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentStatus
from deploy_service.models.heartbeat import RECONCILER, CheckStatus, ReconcilerHeartbeat
from deploy_service.models.types import utcnow
from deploy_service.models.webhook import DeliveryStatus, WebhookDelivery
from deploy_service.reconciler.loop import RUNNING_KEY
from deploy_service.runner.base import Runner
from deploy_service.services.engine import runner
from deploy_service.services.health import check_database, check_engine, check_migrations
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


FACTS_KEY = "deploy_service.engine_facts"


@dataclass
class _EngineFacts:
    """The engine's version and shape as this process last read them, and when (`time.monotonic`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    facts: dict[str, Any] | None = None
    taken_at: float = 0.0


def _engine_facts(engine: Runner) -> dict[str, Any]:
    """`{version, swarm?}`, read at most once per `HEALTH_ENGINE_CACHE_SECONDS` per process (as the readiness
    ping is): a dashboard polling every second costs the engine nothing more. Never raises."""
    period = current_settings().health.engine_cache
    cache: _EngineFacts = current_app.extensions.get(FACTS_KEY) or current_app.extensions.setdefault(
        FACTS_KEY, _EngineFacts()
    )
    with cache.lock:
        if cache.facts is None or period <= 0 or time.monotonic() - cache.taken_at >= period:
            try:
                cache.facts = {"version": engine.engine_version(), **engine.describe()}
            except EngineUnavailable:
                cache.facts = {"version": None}
            cache.taken_at = time.monotonic()
        return dict(cache.facts)


def _counts(column: Any, *where: Any) -> dict[str, int]:
    rows = db.session.execute(select(column, func.count()).where(*where).group_by(column)).all()
    return {str(value): int(count) for value, count in rows}


def system_status() -> dict[str, Any]:
    """`{version, uptime_seconds, database, engine, reconciler, deployments, webhooks}` for an admin.

    Four small queries (the migration, the heartbeat row, two grouped counts over indexed columns) and the
    engine's ping and facts as the readiness check caches them: cheap enough to poll every second.
    """
    config = current_app.config
    engine = runner()
    database = check_database()
    migrations = check_migrations()
    ping = check_engine()
    facts = _engine_facts(engine)
    heartbeat = db.session.get(ReconcilerHeartbeat, RECONCILER)
    running: Any = current_app.extensions.get(RUNNING_KEY)
    last_pass = heartbeat.last_pass_at if heartbeat is not None else None
    by_status = dict.fromkeys((status.value for status in DeploymentStatus), 0)
    by_status.update(_counts(Deployment.status))
    deliveries = _counts(
        WebhookDelivery.status, WebhookDelivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.FAILED])
    )
    db.session.rollback()
    engine_body: dict[str, Any] = {
        "ok": ping["status"] == CheckStatus.OK,
        "kind": engine.name,
        "version": facts.get("version"),
    }
    if "swarm" in facts:
        engine_body["swarm"] = facts["swarm"]
    if ping.get("error"):
        engine_body["error"] = ping["error"]
    current = migrations.get("current") or []
    head = migrations.get("head") or []
    return {
        "version": config["VERSION"],
        "uptime_seconds": round(time.monotonic() - config["STARTED_MONOTONIC"], 3),
        "database": {
            "kind": db.engine.dialect.name,
            "ok": database["status"] == CheckStatus.OK,
            "migration": current[0] if len(current) == 1 else (",".join(current) or None),
            "latest": head[0] if len(head) == 1 else (",".join(head) or None),
        },
        "engine": engine_body,
        "reconciler": {
            "leader": running.leadership.leading() if running is not None else None,
            "holder": heartbeat.holder if heartbeat is not None else None,
            "last_pass_at": last_pass,
            "last_pass_seconds": heartbeat.last_pass_seconds if heartbeat is not None else None,
            "seconds_since_last_pass": round((utcnow() - last_pass).total_seconds(), 3) if last_pass else None,
        },
        "deployments": {"by_status": by_status},
        "webhooks": {
            "pending": deliveries.get(DeliveryStatus.PENDING.value, 0),
            "failed": deliveries.get(DeliveryStatus.FAILED.value, 0),
        },
    }
