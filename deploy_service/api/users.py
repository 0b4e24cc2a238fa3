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
    @blp.doc(operationId="listDeployedAgentsOfUser")
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, DeployedAgentPageSchema)
    @blp.error(403, "`forbidden`: the user is someone else and you are not an admin; or an API key was sent instead.")
    @blp.error(404, "`not_found`: an admin asked for a user that does not exist.")
    def get(self, args: dict[str, Any], user_id: str) -> Page[Any]:
        """List a user's deployed agents

        The user's agents that have a live deployment, each with a summary of it, newest agent first.
        A user may ask for itself, an admin for anyone.
        """
        return deployed_agents_of(current_user(), user_id, **args)
