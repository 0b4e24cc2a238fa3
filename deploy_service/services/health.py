"""Readiness checks: does the database answer, and is its schema at the migrations' head?"""

from __future__ import annotations

import time
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from sqlalchemy import text

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.services.engine import runner


def check_database() -> dict[str, Any]:
    """Run `SELECT 1`; returns `{status, backend, latency_ms}` and never raises."""
    started = time.perf_counter()
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        db.session.rollback()
        return {"status": "error", "backend": db.engine.dialect.name, "error": type(exc).__name__}
    return {
        "status": "ok",
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
        return {"status": "error", "error": type(exc).__name__}
    status = "ok" if current == head else "error"
    result: dict[str, Any] = {"status": status, "current": sorted(current), "head": sorted(head)}
    if status != "ok":
        result["error"] = "database schema is not at the latest migration; run `flask db upgrade`"
    return result


def check_engine() -> dict[str, Any]:
    """Ping the container engine; never raises."""
    started = time.perf_counter()
    engine = runner()
    try:
        engine.ping()
    except EngineUnavailable as exc:
        return {"status": "error", "runner": engine.name, "error": exc.message}
    latency = round((time.perf_counter() - started) * 1000, 2)
    try:
        extra = engine.describe()
    except EngineUnavailable as exc:
        return {"status": "error", "runner": engine.name, "error": exc.message}
    return {"status": "ok", "runner": engine.name, "latency_ms": latency, **extra}
