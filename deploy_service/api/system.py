"""What the service is and how it is: `GET /v1/system/info` and `GET /v1/system/status`."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint
from deploy_service.schemas.system import SystemInfoSchema, SystemStatusSchema
from deploy_service.services.system_info import system_info, system_status

blp = Blueprint("system", __name__, url_prefix="/v1/system", description="The service itself.")


@blp.route("/info")
class Info(MethodView):
    @blp.auth_required()
    @blp.response(200, SystemInfoSchema)
    @blp.doc(operationId="getSystemInfo")
    def get(self) -> dict[str, Any]:
        """Get what this service runs and allows

        Its version, runner, network mode, database, features and limits, for any logged-in user; cheap
        enough to poll (no database query, no engine call per request).
        """
        return system_info()


@blp.route("/status")
class Status(MethodView):
    @blp.auth_required()
    @blp.response(200, SystemStatusSchema)
    @blp.error(403, "`forbidden`: not an admin (or a token or key: this route takes an admin's login only).")
    @blp.doc(operationId="getSystemStatus")
    def get(self) -> dict[str, Any]:
        """Get whether the service's parts are healthy and current

        For an admin: the version and uptime; the database (answers, its migration against the newest);
        the engine (answers, its kind and version, a Swarm's shape); the reconciler (whether this process's
        leads, its last pass and how long it took); deployments by status; webhook deliveries pending and
        failed. Always 200: a part that is down says so in its own `ok`. The engine is pinged and described
        at most once per `HEALTH_ENGINE_CACHE_SECONDS` per process, so a dashboard may poll it every second.
        """
        return system_status()
