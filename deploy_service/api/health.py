"""Health routes for load balancers and orchestrators (Render checks `/health`). No auth."""

from __future__ import annotations

import time
from typing import Any

from flask import current_app
from flask.views import MethodView

from deploy_service.api.common import Blueprint
from deploy_service.services.health import check_database, check_engine, check_migrations, check_reconciler

blp = Blueprint("health", __name__, url_prefix="/health", description="Liveness and readiness checks.")


@blp.route("")
class Liveness(MethodView):
    @blp.response(200)
    def get(self) -> dict[str, Any]:
        """Liveness: the process answers. Touches neither the database nor the engine."""
        return {
            "status": "ok",
            "version": current_app.config["VERSION"],
            "uptime_seconds": round(time.monotonic() - current_app.config["STARTED_MONOTONIC"], 3),
        }


@blp.route("/db")
class DatabaseHealth(MethodView):
    @blp.response(200)
    @blp.alt_response(503, description="The database does not answer.")
    def get(self) -> tuple[dict[str, Any], int]:
        """Whether the database answers a trivial query."""
        result = check_database()
        return result, 200 if result["status"] == "ok" else 503


@blp.route("/ready")
class Readiness(MethodView):
    @blp.response(200)
    @blp.alt_response(503, description="A check failed; `checks` names it.")
    def get(self) -> tuple[dict[str, Any], int]:
        """Readiness: database, schema, engine and reconciler are all fine.

        The database answers, its schema is at the latest migration, the engine answers, and a
        reconciler (in this process or another) completed a pass within `RECONCILER_STALE_SECONDS`.
        """
        checks = {"database": check_database()}
        checks["migrations"] = check_migrations() if checks["database"]["status"] == "ok" else {"status": "skipped"}
        checks["engine"] = check_engine()
        checks["reconciler"] = check_reconciler() if checks["migrations"]["status"] == "ok" else {"status": "skipped"}
        ok = all(check["status"] == "ok" for check in checks.values())
        return {"status": "ok" if ok else "error", "checks": checks}, 200 if ok else 503
