"""Health routes for load balancers and orchestrators (Render checks `/health`). No auth."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, current_app
from flask.views import MethodView

from deploy_service.api.common import Blueprint, json_response
from deploy_service.models.heartbeat import CheckStatus
from deploy_service.schemas.health import DatabaseCheckSchema, LivenessSchema, ReadinessSchema
from deploy_service.services.health import check_database, check_engine, check_migrations, check_reconciler

blp = Blueprint("health", __name__, url_prefix="/health", description="Liveness and readiness checks.")


@blp.route("", methods=["GET"])
@blp.doc(operationId="getHealth", security=[])
@blp.response(200, LivenessSchema, prebuilt=True)
def liveness() -> Response:
    """Liveness: the process answers

    Touches neither the database nor the engine, so it answers 200 as long as the process serves
    requests; no credentials needed. Use it as a load balancer's or orchestrator's liveness probe.
    """
    # Probes and balancers call this all the time: a plain view whose body is built as the schema
    # dumps it (tests/api/test_request_cost.py holds the two alike), with no MethodView or dump.
    config = current_app.config
    return json_response(
        {
            "status": CheckStatus.OK.value,
            "version": config["VERSION"],
            "uptime_seconds": round(time.monotonic() - config["STARTED_MONOTONIC"], 3),
        }
    )


@blp.route("/db")
class DatabaseHealth(MethodView):
    @blp.doc(operationId="getDatabaseHealth", security=[])
    @blp.response(200, DatabaseCheckSchema)
    @blp.alt_response(503, schema=DatabaseCheckSchema, description="The database does not answer; `error` says why.")
    def get(self) -> tuple[dict[str, Any], int]:
        """Whether the database answers

        Runs `SELECT 1`: 200 with its latency, or 503 with the same body, `status` `error` and the
        failure's type. No credentials needed.
        """
        result = check_database()
        return result, 200 if result["status"] == CheckStatus.OK else 503


@blp.route("/ready")
class Readiness(MethodView):
    @blp.doc(operationId="getReadiness", security=[])
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(503, schema=ReadinessSchema, description="A check failed; `checks` names it and says why.")
    def get(self) -> tuple[dict[str, Any], int]:
        """Readiness: database, schema, engine and reconciler are all fine

        The database answers, its schema is at the latest migration, the engine answers (one ping is
        reused for `HEALTH_ENGINE_CACHE_SECONDS`), and a reconciler (in this process or another)
        completed a pass within `RECONCILER_STALE_SECONDS`.
        200 when all four are `ok`, else 503 with the same body (a check whose dependency failed is
        `skipped`). No credentials needed; use it as a readiness probe.
        """
        checks = {"database": check_database()}
        checks["migrations"] = (
            check_migrations() if checks["database"]["status"] == CheckStatus.OK else {"status": CheckStatus.SKIPPED}
        )
        checks["engine"] = check_engine()
        checks["reconciler"] = (
            check_reconciler() if checks["migrations"]["status"] == CheckStatus.OK else {"status": CheckStatus.SKIPPED}
        )
        ok = all(check["status"] == CheckStatus.OK for check in checks.values())
        return {"status": CheckStatus.OK if ok else CheckStatus.ERROR, "checks": checks}, 200 if ok else 503
