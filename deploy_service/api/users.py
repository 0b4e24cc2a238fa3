"""User-centric routes."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user
from deploy_service.schemas.common import PaginationArgs
from deploy_service.schemas.user import DeployedAgentPageSchema
from deploy_service.services.common import Page
from deploy_service.services.users import deployed_agents_of

blp = Blueprint("users", __name__, url_prefix="/v1/users", description="Users.")


@blp.route("/<string:user_id>/deployed-agents")
class DeployedAgents(MethodView):
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, DeployedAgentPageSchema)
    @blp.alt_response(403, response="FORBIDDEN", description="Neither that user nor an admin.")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict[str, Any], user_id: str) -> Page[Any]:
        """The user's agents that have a live deployment. A user may ask for itself, an admin for anyone."""
        return deployed_agents_of(current_user(), user_id, **args)
