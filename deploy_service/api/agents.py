"""Agent routes: CRUD and list, owner-scoped."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user, json_response, links
from deploy_service.models import Agent, Invocation
from deploy_service.schemas.agent import (
    AgentInputSchema,
    AgentListArgs,
    AgentPageSchema,
    AgentPatchSchema,
    AgentSchema,
)
from deploy_service.schemas.common import WindowArgs
from deploy_service.schemas.evaluation import AgentStatsSchema
from deploy_service.schemas.invocation import InvocationListArgs, InvocationPageSchema
from deploy_service.services import agent_reads
from deploy_service.services import agents as agent_service
from deploy_service.services import invocations as invocation_service
from deploy_service.services.agent_stats import agent_stats
from deploy_service.services.common import Page

blp = Blueprint("agents", __name__, url_prefix="/v1/agents", description="Agents: what to run.")


IMAGE_AGENT_EXAMPLE: dict[str, Any] = {
    "name": "support-bot",
    "description": "Answers support questions.",
    "image": "ghcr.io/acme/support-bot:1.2",
    "port": 8080,
    "invoke_path": "/invoke",
    "env": {"LOG_LEVEL": "info"},
    "health_check": {"path": "/health", "interval_seconds": 10},
    "resources": {"cpu": 0.5, "memory_mb": 256},
}
PATCH_EXAMPLE: dict[str, Any] = {"image": "ghcr.io/acme/support-bot:1.3", "env": {"LOG_LEVEL": "debug"}}


@blp.route("")
class Agents(MethodView):
    @blp.doc(operationId="listAgents")
    @blp.auth_required()
    @blp.arguments(AgentListArgs, location="query")
    @blp.response(200, AgentPageSchema, prebuilt=True)
    @blp.error(403, "`forbidden`: `owner_id` of another user and you are not an admin; or an API key was sent.")
    def get(self, args: dict[str, Any]) -> Response:
        """List agents

        Your agents, newest first (an admin sees everyone's), filtered by `status` and a
        case-insensitive match of `q` on the name. `owner_id` of another user is an admin's filter:
        403 for anyone else.
        """
        return json_response(agent_reads.list_agent_bodies(current_user(), **args))

    @blp.doc(operationId="createAgent")
    @blp.auth_required()
    @blp.arguments(AgentInputSchema, example=IMAGE_AGENT_EXAMPLE)
    @blp.response(201, AgentSchema)
    @blp.error(
        403,
        "`forbidden`: an API key was sent instead of a token; or `quota_exceeded`: you already own `QUOTA_AGENTS` "
        "agents (`details: {quota: agents, limit, used}`; admins are exempt).",
    )
    @blp.error(404, "`not_found`: `secrets` names a secret you do not have (`details.secrets` lists them).")
    @blp.error(409, "`conflict`: you already have an agent with this name.")
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
        """Register an agent

        What to run: an `image`, or a git `source` to clone and build (exactly one of the two). The
        service fills the defaults (port 8080, `/invoke`, the configured resources, the health
        check's and source's fields) before storing it; nothing runs until it is deployed.
        """
        return agent_service.create_agent(current_user(), data)


@blp.route("/<string:agent_id>/stats")
class AgentStats(MethodView):
    @blp.doc(operationId="getAgentStats")
    @blp.auth_required()
    @blp.arguments(WindowArgs, location="query")
    @blp.response(200, AgentStatsSchema)
    @blp.error(404, "`not_found`: no such agent, or not yours.")
    def get(self, args: dict[str, Any], agent_id: str) -> dict[str, Any]:
        """Get an agent's stats

        Over the last `hours` hours: calls through `interact` (count, errors, p50/p95 latency), the
        live deployment's uptime and restarts, and the agent's evaluations.
        """
        return agent_stats(current_user(), agent_id, **args)


@blp.route("/<string:agent_id>/invocations")
class AgentInvocations(MethodView):
    @blp.doc(operationId="listInvocations")
    @blp.auth_required()
    @blp.arguments(InvocationListArgs, location="query")
    @blp.response(200, InvocationPageSchema)
    @blp.error(404, "`not_found`: no such agent, or not yours.")
    def get(self, args: dict[str, Any], agent_id: str) -> Page[Invocation]:
        """List an agent's calls

        Every call made through `interact`, newest first: the replica it went to, its session, status,
        error, whether it was streamed, latency, first-byte time and sizes; never the bodies. Filtered
        by `status` (`ok`, `error`) and `since`. Kept `INVOCATION_RETENTION_DAYS`.
        """
        return invocation_service.list_invocations(current_user(), agent_id, **args)


@blp.route("/<id:agent_id>")
class AgentItem(MethodView):
    @blp.doc(operationId="getAgent")
    @blp.auth_required()
    @blp.response(200, AgentSchema)
    @blp.error(404, "`not_found`: no such agent, or not yours.")
    def get(self, agent_id: str) -> Agent:
        """Get an agent

        An agent you own (an admin: any agent); someone else's is a 404, as a missing one.
        """
        return agent_service.get_agent(current_user(), agent_id)

    @blp.doc(operationId="updateAgent")
    @blp.auth_required()
    @blp.arguments(AgentPatchSchema(partial=True), example=PATCH_EXAMPLE)
    @blp.response(200, AgentSchema)
    @blp.error(404, "`not_found`: no such agent, or not yours.")
    @blp.error(
        409,
        "`conflict`: the name is taken; `secrets` names a secret you do not have; or the change would leave "
        "the agent with neither image nor source, or a variable in both env and secrets.",
    )
    def patch(self, data: dict[str, Any], agent_id: str) -> Agent:
        """Update an agent

        Each given top-level field replaces the stored one (an `image` drops the `source` and the
        other way round); it applies at the agent's next deploy or restart. A body that is wrong on
        its own is a 400; one that conflicts with the stored agent a 409.
        """
        return agent_service.update_agent(current_user(), agent_id, data)

    @blp.doc(operationId="deleteAgent")
    @blp.auth_required()
    @blp.response(204)
    @blp.error(404, "`not_found`: no such agent, or not yours.")
    @blp.error(409, "`conflict`: the agent has a live deployment; undeploy it first.")
    def delete(self, agent_id: str) -> None:
        """Delete an agent

        Only an agent without a live deployment can go: undeploy it first (a stopped or failed
        deployment is still live until deleted), else 409.
        """
        agent_service.delete_agent(current_user(), agent_id)
