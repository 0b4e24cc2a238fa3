"""The event feed: `GET /v1/events`, what happened across every deployment the caller may see."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user, json_response
from deploy_service.schemas.deployment import FeedArgs, FeedPageSchema
from deploy_service.services.event_feed import list_feed

blp = Blueprint("events", __name__, url_prefix="/v1/events", description="Events across deployments.")


@blp.route("")
class Feed(MethodView):
    @blp.auth_required()
    @blp.arguments(FeedArgs, location="query")
    @blp.response(200, FeedPageSchema, prebuilt=True)
    @blp.error(404, "`not_found`: `before` names no event of your feed (or someone else's event).")
    @blp.doc(operationId="listEvents")
    def get(self, args: dict[str, Any]) -> Response:
        """List events across deployments

        Every event of your deployments (an admin's: everyone's), newest first, each with its `deployment_id`
        and `agent_id`; filters `event_type`, `deployment_id`, `agent_id`, `since`. Page with `before` (the
        previous page's `next_before`): as fast deep in the feed as at its start.
        """
        return json_response(list_feed(current_user(), **args))
