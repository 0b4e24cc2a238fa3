"""What the service is: `GET /v1/system/info`."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint
from deploy_service.schemas.system import SystemInfoSchema
from deploy_service.services.system_info import system_info

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
