"""Readiness checks: does the database answer, is its schema at the migrations' head, does the engine
answer, and has a reconciler (in this process or another) completed a pass lately?"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from sqlalchemy import select, text

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.models.heartbeat import RECONCILER, CheckStatus, ReconcilerHeartbeat
from deploy_service.models.types import utcnow
from deploy_service.runner.errors import RunnerConfigError
from deploy_service.services.engine import runner
from deploy_service.settings import current_settings


def check_database() -> dict[str, Any]:
    """Run `SELECT 1`; returns `{status, backend, latency_ms}` and never raises."""
    started = time.perf_counter()
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        db.session.rollback()
        return {"status": CheckStatus.ERROR, "backend": db.engine.dialect.name, "error": type(exc).__name__}
    return {
        "status": CheckStatus.OK,
        "backend": db.engine.dialect.name,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


def _script_heads() -> set[str]:
    cache_key = "deploy_service.migration_heads"
    heads: set[str] | None = current_app.extensions.get(cache_key)
    if heads is None:
        config = AlembicConfig()
        config.set_main_option("script_location", current_app.extensions["migrate"].directory)
        heads = set(ScriptDirectory.from_config(config).get_heads())
        current_app.extensions[cache_key] = heads
    return heads


def check_migrations() -> dict[str, Any]:
    """Compare the database's Alembic revision with the migration scripts' head; never raises."""
    try:
        head = _script_heads()
        with db.engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except Exception as exc:  # noqa: BLE001
        return {"status": CheckStatus.ERROR, "error": type(exc).__name__}
    status = CheckStatus.OK if current == head else CheckStatus.ERROR
    result: dict[str, Any] = {"status": status, "current": sorted(current), "head": sorted(head)}
    if status != CheckStatus.OK:
        result["error"] = "database schema is not at the latest migration; run `flask db upgrade`"
    return result


ENGINE_CHECK_KEY = "deploy_service.engine_check"


@dataclass
class _EngineCheck:
    """The last engine ping of this process, and when it was taken (`time.monotonic`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    result: dict[str, Any] | None = None
    taken_at: float = 0.0


def check_engine() -> dict[str, Any]:
    """The engine check: a ping reused for `HEALTH_ENGINE_CACHE_SECONDS` (per process); never raises.

    `/health/ready` needs no credentials, so a flood of it would otherwise be as many engine calls;
    concurrent probes wait for the one ping in flight. Shows whether the engine answers, and why not:
    never the registry or the Swarm's shape (`Runner.describe`), which an anonymous caller has no use for.
    """
    period = current_settings().health.engine_cache
    if period <= 0:
        return _ping_engine()
    cached: _EngineCheck = current_app.extensions.get(ENGINE_CHECK_KEY) or current_app.extensions.setdefault(
        ENGINE_CHECK_KEY, _EngineCheck()
    )
    with cached.lock:
        if cached.result is None or time.monotonic() - cached.taken_at >= period:
            cached.result = _ping_engine()
            cached.taken_at = time.monotonic()
        return dict(cached.result)


def _ping_engine() -> dict[str, Any]:
    started = time.perf_counter()
    engine = runner()
    try:
        engine.ping()
        engine.check_networking()  # e.g. `auto` resolving to host networking where that is refused
    except (EngineUnavailable, RunnerConfigError) as exc:
        return {"status": CheckStatus.ERROR, "runner": engine.name, "error": exc.message}
    latency = round((time.perf_counter() - started) * 1000, 2)
    return {"status": CheckStatus.OK, "runner": engine.name, "latency_ms": latency}


def check_reconciler() -> dict[str, Any]:
    """Whether a reconciler completed a pass in the last `RECONCILER_STALE_SECONDS`; never raises.

    The time is read from the heartbeat row the leading reconciler writes, so this works in a web
    worker that runs no reconciler itself. The staleness is counted from the later of that pass and
    this process's start: a brand-new deploy (no row yet), or a process restarted after a long
    downtime, gives the reconciler `RECONCILER_STALE_SECONDS` to complete its first pass.
    """
    config = current_app.config
    stale = current_settings().loop.stale
    try:
        last_pass = db.session.scalar(
            select(ReconcilerHeartbeat.last_pass_at).where(ReconcilerHeartbeat.name == RECONCILER)
        )
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001
        db.session.rollback()
        return {"status": CheckStatus.ERROR, "error": type(exc).__name__}
    now = utcnow()
    started = now - timedelta(seconds=time.monotonic() - config["STARTED_MONOTONIC"])
    age = (now - max(last_pass or started, started)).total_seconds()
    result: dict[str, Any] = {
        "status": CheckStatus.OK if age <= stale else CheckStatus.ERROR,
        "last_pass_at": last_pass.isoformat() if last_pass else None,
        "stale_seconds": stale,
    }
    if age > stale:
        result["error"] = (
            f"no reconciler has completed a pass for {age:.0f} s; is `flask reconcile` (or the embedded "
            "reconciler) running?"
        )
    return result
