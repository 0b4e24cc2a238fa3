"""Agent routes: CRUD and list, owner-scoped."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user, links
from deploy_service.models import Agent
from deploy_service.schemas.agent import (
    AgentInputSchema,
    AgentListArgs,
    AgentPageSchema,
    AgentPatchSchema,
    AgentSchema,
)
from deploy_service.schemas.common import WindowArgs
from deploy_service.schemas.evaluation import AgentStatsSchema
from deploy_service.services import agents as agent_service
from deploy_service.services.agent_stats import agent_stats
from deploy_service.services.common import Page

blp = Blueprint("agents", __name__, url_prefix="/v1/agents", description="Agents: what to run.")


@blp.route("")
class Agents(MethodView):
    @blp.auth_required()
    @blp.arguments(AgentListArgs, location="query")
    @blp.response(200, AgentPageSchema)
    @blp.alt_response(403, response="FORBIDDEN", description="`owner_id` of another user, and not an admin.")
    def get(self, args: dict[str, Any]) -> Page[Agent]:
        """List agents, newest first (an admin sees everyone's)."""
        return agent_service.list_agents(current_user(), **args)

    @blp.auth_required()
    @blp.arguments(AgentInputSchema)
    @blp.response(201, AgentSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="`secrets` names a secret you do not have.")
    @blp.alt_response(409, response="CONFLICT", description="An agent with this name exists.")
    @blp.doc(
        **links(
            201,
            "agent_id",
            "id",
            ("GetAgent", "get", "/v1/agents/{agent_id}"),
            ("UpdateAgent", "patch", "/v1/agents/{agent_id}"),
            ("DeleteAgent", "delete", "/v1/agents/{agent_id}"),
            ("DeployAgent", "post", "/v1/agents/{agent_id}/deploy"),
            ("CreateApiKey", "post", "/v1/agents/{agent_id}/api-key"),
            ("AgentStats", "get", "/v1/agents/{agent_id}/stats"),
        )
    )
    def post(self, data: dict[str, Any]) -> Agent:
        """Register an agent: an image, or a git source to clone and build."""
        return agent_service.create_agent(current_user(), data)


@blp.route("/<string:agent_id>/stats")
class AgentStats(MethodView):
    @blp.auth_required()
    @blp.arguments(WindowArgs, location="query")
    @blp.response(200, AgentStatsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict[str, Any], agent_id: str) -> dict[str, Any]:
        """Invocations (count, errors, p50/p95 latency), uptime, restarts and evaluations over a window."""
        return agent_stats(current_user(), agent_id, **args)


@blp.route("/<id:agent_id>")
class AgentItem(MethodView):
    @blp.auth_required()
    @blp.response(200, AgentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, agent_id: str) -> Agent:
        """Get an agent."""
        return agent_service.get_agent(current_user(), agent_id)

    @blp.auth_required()
    @blp.arguments(AgentPatchSchema(partial=True))
    @blp.response(200, AgentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(
        409,
        response="CONFLICT",
        description="The name is taken; `secrets` names a secret you do not have; or the change would leave "
        "the agent with neither image nor source, or a variable in both env and secrets.",
    )
    def patch(self, data: dict[str, Any], agent_id: str) -> Agent:
        """Update an agent: each given field replaces the stored one; applies at the next deploy."""
        return agent_service.update_agent(current_user(), agent_id, data)

    @blp.auth_required()
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="The agent has a live deployment.")
    def delete(self, agent_id: str) -> None:
        """Delete an agent without a live deployment."""
        agent_service.delete_agent(current_user(), agent_id)
