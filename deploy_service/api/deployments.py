"""Deployment routes, and the agent-centric shortcuts to them (`/v1/agents/<id>/deploy`, ...)."""

from __future__ import annotations

from typing import Any

from flask import Response, stream_with_context
from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_caller, current_user, json_response, links
from deploy_service.models import Deployment, DeploymentResult
from deploy_service.models.api_key import SCOPE_RESULTS
from deploy_service.schemas.common import PaginationArgs, WindowArgs
from deploy_service.schemas.deployment import (
    DeployBodySchema,
    DeploymentListArgs,
    DeploymentMetricsSchema,
    DeploymentPageSchema,
    DeploymentSchema,
    DeploymentStatusSchema,
    DeployOptionsSchema,
    EventListArgs,
    EventPageSchema,
    LogArgs,
    LogsSchema,
    ResultCreateSchema,
    ResultPageSchema,
    ResultSchema,
    ScaleSchema,
)
from deploy_service.services import deployment_reads as reads
from deploy_service.services import deployments as service
from deploy_service.services import logs as log_service
from deploy_service.services.common import Page
from deploy_service.services.metrics import deployment_metrics

blp = Blueprint("deployments", __name__, url_prefix="/v1/deployments", description="Deployments: agents running.")
agent_blp = Blueprint("agent-deployments", __name__, url_prefix="/v1/agents", description="Deploying agents, by agent.")

ENGINE_DOWN = {"response": "SERVICE_UNAVAILABLE", "description": "The container engine cannot be reached."}


def _deploy(agent_id: str, options: dict[str, Any]) -> Deployment:
    return service.create_deployment(current_user(), agent_id, **options)


@blp.route("")
class Deployments(MethodView):
    @blp.auth_required()
    @blp.arguments(DeploymentListArgs, location="query")
    @blp.response(200, DeploymentPageSchema)
    def get(self, args: dict[str, Any]) -> Response:
        """List deployments, newest first (filters `agent_id`, `status`)."""
        return json_response(reads.list_deployment_bodies(current_user(), **args))

    @blp.auth_required()
    @blp.arguments(DeployBodySchema)
    @blp.response(202, DeploymentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="The agent already has a live deployment.")
    @blp.alt_response(503, **ENGINE_DOWN)
    @blp.doc(
        **links(
            202,
            "deployment_id",
            "id",
            ("GetDeployment", "get", "/v1/deployments/{deployment_id}"),
            ("DeploymentEvents", "get", "/v1/deployments/{deployment_id}/events"),
            ("DeploymentLogs", "get", "/v1/deployments/{deployment_id}/logs"),
            ("DeploymentMetrics", "get", "/v1/deployments/{deployment_id}/metrics"),
            ("ScaleDeployment", "post", "/v1/deployments/{deployment_id}/scale"),
            ("StopDeployment", "post", "/v1/deployments/{deployment_id}/stop"),
            ("RestartDeployment", "post", "/v1/deployments/{deployment_id}/restart"),
            ("AddResult", "post", "/v1/deployments/{deployment_id}/results"),
            ("DeleteDeployment", "delete", "/v1/deployments/{deployment_id}"),
        )
    )
    def post(self, data: dict[str, Any]) -> Deployment:
        """Deploy an agent: 202 with the new deployment in `deploying`."""
        agent_id = data.pop("agent_id")
        return _deploy(agent_id, data)


@blp.route("/<id:deployment_id>")
class DeploymentItem(MethodView):
    @blp.auth_required()
    @blp.response(200, DeploymentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, deployment_id: str) -> Response:
        """Get a deployment, with its replicas."""
        return json_response(reads.get_deployment_body(current_user(), deployment_id))

    @blp.auth_required()
    @blp.response(200, DeploymentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(503, **ENGINE_DOWN)
    def delete(self, deployment_id: str) -> Deployment:
        """Delete (kill) a deployment at once; the reconciler removes its containers right after.

        Deleting again returns the same body.
        """
        return service.delete(current_user(), deployment_id)


@blp.route("/<string:deployment_id>/metrics")
class Metrics(MethodView):
    @blp.auth_required()
    @blp.arguments(WindowArgs, location="query")
    @blp.response(200, DeploymentMetricsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict[str, Any], deployment_id: str) -> dict[str, Any]:
        """CPU and memory of each replica (latest samples), restarts, uptime, invocations over a window."""
        return deployment_metrics(current_user(), deployment_id, **args)


@blp.route("/<string:deployment_id>/restart")
class Restart(MethodView):
    @blp.auth_required()
    @blp.response(202, DeploymentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="Deploying or killed: `invalid_state`.")
    @blp.alt_response(503, **ENGINE_DOWN)
    def post(self, deployment_id: str) -> Deployment:
        """Restart: rolling from running/ready, start again from stopped/failed."""
        return service.restart(current_user(), deployment_id)


@blp.route("/<string:deployment_id>/scale")
class Scale(MethodView):
    @blp.auth_required()
    @blp.arguments(ScaleSchema)
    @blp.response(202, DeploymentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(503, **ENGINE_DOWN)
    def post(self, data: dict[str, Any], deployment_id: str) -> Deployment:
        """Scale a running deployment (400 `invalid_state` otherwise)."""
        return service.scale(current_user(), deployment_id, data["replicas"])


@blp.route("/<string:deployment_id>/stop")
class Stop(MethodView):
    @blp.auth_required()
    @blp.response(202, DeploymentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="Killed: `invalid_state`.")
    @blp.alt_response(503, **ENGINE_DOWN)
    def post(self, deployment_id: str) -> Deployment:
        """Stop a deployment: containers are removed and it becomes `stopped`."""
        return service.stop(current_user(), deployment_id)


@blp.route("/<string:deployment_id>/events")
class Events(MethodView):
    @blp.auth_required()
    @blp.arguments(EventListArgs, location="query")
    @blp.response(200, EventPageSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict[str, Any], deployment_id: str) -> dict[str, Any]:
        """A deployment's events, newest first (filters `event_type`, `status`)."""
        deployment, page = service.list_events(current_user(), deployment_id, **args)
        return {
            "deployment_id": deployment.id,
            "deployment_status": deployment.status,
            "items": page.items,
            "total": page.total,
            "skip": page.skip,
            "limit": page.limit,
        }


@blp.route("/<string:deployment_id>/logs")
class Logs(MethodView):
    @blp.auth_required()
    @blp.arguments(LogArgs, location="query")
    @blp.response(200, LogsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(503, **ENGINE_DOWN)
    def get(self, args: dict[str, Any], deployment_id: str) -> Any:
        """Build or runtime logs; with `follow=true`, a `text/event-stream` until the deployment ends."""
        if args.pop("follow"):
            stream = log_service.follow_logs(current_user(), deployment_id, **args)
            first = next(stream)  # a missing deployment is a 404 before the stream starts
            body = stream_with_context(_prepend(first, stream))
            return Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
        return log_service.read_logs(current_user(), deployment_id, **args)


def _prepend(first: str, rest: Any) -> Any:
    yield first
    yield from rest


@blp.route("/<string:deployment_id>/results")
class Results(MethodView):
    @blp.auth_required(key_scope=SCOPE_RESULTS)
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, ResultPageSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict[str, Any], deployment_id: str) -> Page[DeploymentResult]:
        """What the deployment produced, newest first (owner, or the agent's key with `results`)."""
        return service.list_results(current_caller(), deployment_id, **args)

    @blp.auth_required(key_scope=SCOPE_RESULTS)
    @blp.arguments(ResultCreateSchema)
    @blp.response(201, ResultSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, data: dict[str, Any], deployment_id: str) -> DeploymentResult:
        """Add a result (a string or an object), as the owner or as the agent with its key."""
        return service.add_result(current_caller(), deployment_id, data["results"])


@agent_blp.route("/deploy")
class DeployAgent(MethodView):
    @agent_blp.auth_required()
    @agent_blp.arguments(DeployBodySchema)
    @agent_blp.response(202, DeploymentSchema)
    @agent_blp.alt_response(404, response="NOT_FOUND")
    @agent_blp.alt_response(409, response="CONFLICT")
    @agent_blp.alt_response(503, **ENGINE_DOWN)
    def post(self, data: dict[str, Any]) -> Deployment:
        """Deploy an agent (same as `POST /v1/deployments`)."""
        agent_id = data.pop("agent_id")
        return _deploy(agent_id, data)


@agent_blp.route("/<string:agent_id>/deploy")
class DeployThisAgent(MethodView):
    @agent_blp.auth_required()
    @agent_blp.arguments(DeployOptionsSchema)
    @agent_blp.response(202, DeploymentSchema)
    @agent_blp.alt_response(404, response="NOT_FOUND")
    @agent_blp.alt_response(409, response="CONFLICT")
    @agent_blp.alt_response(503, **ENGINE_DOWN)
    def post(self, data: dict[str, Any], agent_id: str) -> Deployment:
        """Deploy this agent."""
        return _deploy(agent_id, data)


@agent_blp.route("/<string:agent_id>/undeploy")
class UndeployAgent(MethodView):
    @agent_blp.auth_required()
    @agent_blp.response(200, DeploymentSchema)
    @agent_blp.alt_response(404, response="NOT_FOUND", description="No live deployment.")
    @agent_blp.alt_response(503, **ENGINE_DOWN)
    def post(self, agent_id: str) -> Deployment:
        """Undeploy: delete the agent's live deployment."""
        deployment = service.live_deployment_of_agent(current_user(), agent_id)
        return service.delete(current_user(), deployment.id)


@agent_blp.route("/<string:agent_id>/restart")
class RestartAgent(MethodView):
    @agent_blp.auth_required()
    @agent_blp.response(202, DeploymentSchema)
    @agent_blp.alt_response(404, response="NOT_FOUND", description="No such agent.")
    @agent_blp.alt_response(
        409, response="CONFLICT", description="`invalid_state`: no live deployment, or it is deploying or killed."
    )
    @agent_blp.alt_response(503, **ENGINE_DOWN)
    def post(self, agent_id: str) -> Deployment:
        """Restart the agent's live deployment (409 `invalid_state` when it has none)."""
        deployment = service.live_deployment_of_agent(current_user(), agent_id, missing="invalid_state")
        return service.restart(current_user(), deployment.id)


@agent_blp.route("/<string:agent_id>/deployment-status")
class AgentDeploymentStatus(MethodView):
    @agent_blp.auth_required()
    @agent_blp.response(200, DeploymentStatusSchema)
    @agent_blp.alt_response(404, response="NOT_FOUND", description="Never deployed.")
    def get(self, agent_id: str) -> Deployment:
        """Status of the agent's live (else most recent) deployment."""
        return service.agent_deployment(current_user(), agent_id)
