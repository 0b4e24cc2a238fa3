"""Deployment routes, and the agent-centric shortcuts to them (`/v1/agents/<id>/deploy`, ...).

Both blueprints document their operations under the one `deployments` tag.
"""

from __future__ import annotations

from typing import Any

from flask import Response, stream_with_context
from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_caller, current_user, json_response, links
from deploy_service.models import Deployment, DeploymentEvent, DeploymentResult
from deploy_service.schemas.common import PaginationArgs, WindowArgs
from deploy_service.schemas.deployment import (
    REPORT_EXAMPLE,
    RESULT_EXAMPLE,
    AgentDeploymentStatusSchema,
    DeployBodySchema,
    DeploymentCreateSchema,
    DeploymentListArgs,
    DeploymentMetricsSchema,
    DeploymentPageSchema,
    DeploymentSchema,
    DeployOptionsSchema,
    EventListArgs,
    EventPageSchema,
    EventReportSchema,
    EventSchema,
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
from deploy_service.services import stored_logs
from deploy_service.services.common import Page
from deploy_service.services.metrics import deployment_metrics

TAG = "deployments"
blp = Blueprint(TAG, __name__, url_prefix="/v1/deployments", description="Deployments: agents running.")
agent_blp = Blueprint("agent-deployments", __name__, url_prefix="/v1/agents", description="Deploying agents, by agent.")

ENGINE_DOWN = "`engine_unavailable`: the container engine does not answer; nothing was written."
CHANGED = "`conflict`: the deployment changed while the request was handled; read it again and retry."
NO_DEPLOYMENT = "`not_found`: no such deployment (or it is someone else's)."
NO_AGENT = "`not_found`: no such agent (or it is someone else's)."
DEPLOY_CONFLICT = "`conflict`: the agent already has a live deployment (`details.deployment_id`)."
DEPLOY_INVALID = (
    "`validation_error`: a bad body, `replicas` above `MAX_REPLICAS`, an override that sets a variable "
    "the agent also takes from a secret, or an agent stored with an image it may no longer name (a private "
    "registry not in `ALLOWED_REGISTRIES`, or an image this service built) or a git source on a private host "
    "not in `ALLOWED_GIT_HOSTS` (`details.source.git_url`)."
)
RESTART_INVALID = (
    "`validation_error`: the agent's env now sets a variable it also takes from a secret, or its image is one "
    "it may no longer name (a private registry not in `ALLOWED_REGISTRIES`, or an image this service built), or "
    "its git source is on a private host not in `ALLOWED_GIT_HOSTS`."
)
QUOTA = (
    "`forbidden`: an API key was sent instead of a token; or `quota_exceeded`: your live deployments would "
    "ask for more than `QUOTA_REPLICAS` replicas or `QUOTA_MEMORY_MB` MB (replicas × memory_mb) in all "
    "(`details: {quota, limit, used}`, `quota` being `replicas` or `memory_mb`; admins are exempt); nothing "
    "was written."
)
DEPLOY_OPTIONS = {"replicas": 2, "env": {"LOG_LEVEL": "debug"}, "resources": {"cpu": 0.5, "memory_mb": 256}}
DEPLOY_BODY = {"agent_id": "5b7c1f0e-8a2d-4c3b-9f6e-1d2a3b4c5d6e", **DEPLOY_OPTIONS}
DEPLOY_SOURCE = {
    "source": {"git_url": "https://github.com/acme/support-bot.git", "branch": "main"},
    "replicas": 2,
    "env": {"MODE": "fast"},
    "health_check": {"path": "/health"},
}
DEPLOY_IMAGE = {"image": "ghcr.io/acme/support-bot:1.4", "name": "support-bot", "port": 8000}
# With `follow=true`: OpenAPI 3.1 has `schema` of an event stream describe one event (3.2's `itemSchema`).
SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "description": "One server-sent event. Comment keep-alives (`: following`) carry no event.",
            "properties": {
                "event": {
                    "type": "string",
                    "enum": ["error", "end"],
                    "description": "Absent for a log line; `error` if the engine stops answering; `end`, last.",
                },
                "data": {
                    "type": "string",
                    "description": "JSON: a `LogLine` for a line; `{status}` (and `reason`) for `end`; "
                    "`{error, message}` for `error`.",
                },
            },
            "required": ["data"],
        }
    }
}
DEPLOYMENT_LINKS = links(
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


def _deploy(agent_id: str, options: dict[str, Any]) -> Deployment:
    return service.create_deployment(current_user(), agent_id, **options)


@blp.route("")
class Deployments(MethodView):
    @blp.auth_required()
    @blp.arguments(DeploymentListArgs, location="query")
    @blp.response(200, DeploymentPageSchema, prebuilt=True)
    @blp.doc(operationId="listDeployments")
    def get(self, args: dict[str, Any]) -> Response:
        """List deployments

        The caller's deployments (an admin's: everyone's), newest first, optionally of one agent
        (`agent_id`) or in one status (`status`).
        """
        return json_response(reads.list_deployment_bodies(current_user(), **args))

    @blp.auth_required()
    @blp.arguments(
        DeploymentCreateSchema,
        examples={
            "agent": {"summary": "An agent you registered", "value": DEPLOY_BODY},
            "source": {"summary": "Straight from a repository", "value": DEPLOY_SOURCE},
            "image": {"summary": "Straight from an image", "value": DEPLOY_IMAGE},
        },
    )
    @blp.response(202, DeploymentSchema)
    @blp.error(
        400,
        DEPLOY_INVALID[:-1] + "; not exactly one of `agent_id`, `source` and `image`, or a new agent's field "
        "with `agent_id`; with `source` or `image`, anything `POST /v1/agents` refuses (the git URL, branch "
        "and paths checked before anything runs).",
    )
    @blp.error(403, QUOTA.replace("(`details", "or (with `source` or `image`) `QUOTA_AGENTS` agents (`details"))
    @blp.error(404, NO_AGENT[:-1] + "; with `source` or `image`: a secret it names is not one of yours.")
    @blp.error(409, DEPLOY_CONFLICT[:-1] + "; with `name`: you have an agent of that name.")
    @blp.error(503, ENGINE_DOWN)
    @blp.doc(operationId="createDeployment", **DEPLOYMENT_LINKS)
    def post(self, data: dict[str, Any]) -> Deployment:
        """Deploy an agent

        Creates the agent's deployment in `deploying` and answers 202 at once; the reconciler pulls
        or builds the image and starts the replicas. The agent's owner (or an admin) may deploy it; an
        agent has at most one live deployment (409 otherwise). Instead of `agent_id`, a git `source`
        (or an `image`) and any other agent field deploy straight from the repository: an agent owned by
        you is created (named `name`, else `<repo>-<branch>`, with `-2`, `-3`... when taken) with the
        deployment, in one transaction (a refused deploy leaves no agent behind); the answer's `agent_id`
        names it.
        """
        replicas = data.pop("replicas")
        if "agent_id" in data:
            return _deploy(data.pop("agent_id"), {"replicas": replicas, **data})
        return service.deploy_new_agent(current_user(), data, replicas=replicas)


@blp.route("/<id:deployment_id>")
class DeploymentItem(MethodView):
    @blp.auth_required()
    @blp.response(200, DeploymentSchema, prebuilt=True)
    @blp.error(404, NO_DEPLOYMENT)
    @blp.doc(operationId="getDeployment")
    def get(self, deployment_id: str) -> Response:
        """Get a deployment

        The deployment with its replica counts, config and instances, for its owner or an admin.
        """
        return json_response(reads.get_deployment_body(current_user(), deployment_id))

    @blp.auth_required()
    @blp.response(200, DeploymentSchema)
    @blp.error(404, NO_DEPLOYMENT)
    @blp.error(409, CHANGED)
    @blp.error(503, ENGINE_DOWN)
    @blp.doc(operationId="deleteDeployment")
    def delete(self, deployment_id: str) -> Deployment:
        """Delete a deployment

        Kills the deployment at once (`killed`, `ended_at` set); the reconciler removes its
        containers right after. Deleting a killed deployment again returns the same body (and does not
        need the engine).
        """
        return service.delete(current_user(), deployment_id)


@blp.route("/<string:deployment_id>/metrics")
class Metrics(MethodView):
    @blp.auth_required()
    @blp.arguments(WindowArgs, location="query")
    @blp.response(200, DeploymentMetricsSchema)
    @blp.error(404, NO_DEPLOYMENT)
    @blp.doc(operationId="getDeploymentMetrics")
    def get(self, args: dict[str, Any], deployment_id: str) -> dict[str, Any]:
        """Get a deployment's metrics

        CPU and memory of each replica (its latest sample) and their sums, restarts, uptime, and the
        invocations of the last `hours` hours.
        """
        return deployment_metrics(current_user(), deployment_id, **args)


@blp.route("/<string:deployment_id>/restart")
class Restart(MethodView):
    @blp.auth_required()
    @blp.response(202, DeploymentSchema)
    @blp.error(400, RESTART_INVALID)
    @blp.error(403, QUOTA)
    @blp.error(404, NO_DEPLOYMENT)
    @blp.error(409, "`invalid_state`: deploying or killed, or a job whose run is under way; or " + CHANGED)
    @blp.error(503, ENGINE_DOWN)
    @blp.doc(operationId="restartDeployment")
    def post(self, deployment_id: str) -> Deployment:
        """Restart a deployment

        With the agent's current settings: a rolling restart from `running`/`ready`, a fresh start (back
        to `deploying`) from `stopped`/`failed`; a job runs again from `succeeded`/`failed`/`stopped`. 409
        `invalid_state` while deploying, once killed, and for a job whose run is under way.

        A new release when what would run changed (the agent's image, source or resolved config; the answer's
        `revision` is its number). Otherwise the current release's replicas are replaced, running its own
        image, unless the image's preparation finds that its tag now names another image (`image_moved`) or
        that its git branch moved since it was built (asked of the repository without cloning;
        `branch_moved`): that image, or the branch's head built, then runs as a new release (`revision` moves
        on once it is found; the repository could not be asked: a `branch_unchecked` event, and the
        release's own commit runs again).
        """
        return service.restart(current_user(), deployment_id)


@blp.route("/<string:deployment_id>/scale")
class Scale(MethodView):
    @blp.auth_required()
    @blp.arguments(ScaleSchema, example={"replicas": 3})
    @blp.response(202, DeploymentSchema)
    @blp.error(
        400,
        "`invalid_state`: the deployment is not running or ready; `validation_error`: a bad body, or "
        "`replicas` above `MAX_REPLICAS`.",
    )
    @blp.error(403, QUOTA)
    @blp.error(404, NO_DEPLOYMENT)
    @blp.error(409, CHANGED)
    @blp.error(503, ENGINE_DOWN)
    @blp.doc(operationId="scaleDeployment")
    def post(self, data: dict[str, Any], deployment_id: str) -> Deployment:
        """Scale a deployment

        Sets the desired replica count of a `running` or `ready` deployment; the reconciler starts or
        removes replicas. Any other status is a 400 `invalid_state` (the contract's status for this
        action, where the other actions answer 409).
        """
        return service.scale(current_user(), deployment_id, data["replicas"])


@blp.route("/<string:deployment_id>/stop")
class Stop(MethodView):
    @blp.auth_required()
    @blp.response(202, DeploymentSchema)
    @blp.error(404, NO_DEPLOYMENT)
    @blp.error(409, "`invalid_state`: the deployment is killed; or " + CHANGED)
    @blp.error(503, ENGINE_DOWN)
    @blp.doc(operationId="stopDeployment")
    def post(self, deployment_id: str) -> Deployment:
        """Stop a deployment

        Its containers are removed and it becomes `stopped` (a restart starts it again). Stopping a
        deployment already asked to stop changes nothing; a killed one is 409 `invalid_state`.
        """
        return service.stop(current_user(), deployment_id)


@blp.route("/<string:deployment_id>/events")
class Events(MethodView):
    @blp.auth_required()
    @blp.arguments(EventListArgs, location="query")
    @blp.response(200, EventPageSchema, prebuilt=True)
    @blp.error(404, NO_DEPLOYMENT)
    @blp.doc(operationId="listDeploymentEvents")
    def get(self, args: dict[str, Any], deployment_id: str) -> Response:
        """List a deployment's events

        What happened to the deployment, newest first, optionally of one `event_type` or recorded in
        one `status`; with the deployment's current status.
        """
        return json_response(reads.list_event_bodies(current_user(), deployment_id, **args))

    @blp.auth_required()
    @blp.arguments(EventReportSchema, example=REPORT_EXAMPLE)
    @blp.response(201, EventSchema)
    @blp.error(404, NO_DEPLOYMENT + " With an API key: not a deployment of the key's agent.")
    @blp.doc(operationId="reportDeploymentEvent")
    def post(self, data: dict[str, Any], deployment_id: str) -> DeploymentEvent:
        """Report progress as an event

        The agent reports its own progress (or anything worth a line in the history): an event of type
        `agent_reported` with `message` and `data`, stamped with the deployment's status and listed by
        `GET .../events`. Posted with the agent's API key (the `results` scope) or by the deployment's owner.
        """
        return service.report_event(current_caller(), deployment_id, data["message"], data.get("data") or {})


@blp.route("/<string:deployment_id>/logs")
class Logs(MethodView):
    @blp.auth_required()
    @blp.arguments(LogArgs, location="query")
    @blp.response(200, LogsSchema)
    @blp.error(404, f"{NO_DEPLOYMENT} With `previous=true`: no previous container of that replica is stored.")
    @blp.error(503, ENGINE_DOWN.replace("; nothing was written", " (runtime logs are read from it)"))
    @blp.doc(operationId="getDeploymentLogs", responses={200: {"content": SSE}})
    def get(self, args: dict[str, Any], deployment_id: str) -> Any:
        """Get a deployment's logs

        The stored build log (`source=build`) or the replicas' output merged by time (`runtime`), the
        last `tail` lines, with the stored last lines of containers already removed (they outlive
        their containers); a line longer than `LOG_LINE_MAX_BYTES` comes as several. A replica whose
        container is gone and was not stored has no lines (never an error). With `follow=true` the
        answer is a `text/event-stream` of the same lines first, then new ones as they come, until the
        deployment ends (or `LOG_FOLLOW_MAX_SECONDS`); an engine failure mid-stream is an `error`
        event there, not a 503.
        A user follows at most `LOG_FOLLOW_MAX_PER_USER` streams at once, across every worker: one more
        is the 429 `rate_limited` that every `/v1` route documents, with `Retry-After`.
        """
        if args.pop("previous"):
            return stored_logs.previous_logs(
                current_user(), deployment_id, replica=args["replica"], tail=args["tail"], since=args.get("since")
            )
        if args.pop("follow"):
            stream = log_service.follow_logs(current_user(), deployment_id, **args)
            first = next(stream)  # a missing deployment (404) or one stream too many (429) before it starts
            body = stream_with_context(_prepend(first, stream))
            response = Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
            response.call_on_close(stream.close)  # frees its slot even if the server never iterated the body
            return response
        return log_service.read_logs(current_user(), deployment_id, **args)


def _prepend(first: str, rest: Any) -> Any:
    yield first
    yield from rest


@blp.route("/<string:deployment_id>/results")
class Results(MethodView):
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, ResultPageSchema)
    @blp.error(404, NO_DEPLOYMENT + " With an API key: not a deployment of the key's agent.")
    @blp.doc(operationId="listDeploymentResults")
    def get(self, args: dict[str, Any], deployment_id: str) -> Page[DeploymentResult]:
        """List a deployment's results

        What the deployment produced, newest first: for its owner, or for the agent with an API key
        that has the `results` scope.
        """
        return service.list_results(current_caller(), deployment_id, **args)

    @blp.auth_required()
    @blp.arguments(ResultCreateSchema, example=RESULT_EXAMPLE)
    @blp.response(201, ResultSchema)
    @blp.error(404, NO_DEPLOYMENT + " With an API key: not a deployment of the key's agent.")
    @blp.doc(operationId="addDeploymentResult")
    def post(self, data: dict[str, Any], deployment_id: str) -> DeploymentResult:
        """Add a result to a deployment

        Stores a string or a JSON object the deployment produced (at most 256 KiB as JSON), posted by
        its owner or by the agent with an API key that has the `results` scope.
        """
        return service.add_result(current_caller(), deployment_id, data["results"])


@agent_blp.route("/deploy")
class DeployAgent(MethodView):
    @agent_blp.auth_required()
    @agent_blp.arguments(DeployBodySchema, example=DEPLOY_BODY)
    @agent_blp.response(202, DeploymentSchema)
    @agent_blp.error(400, DEPLOY_INVALID)
    @agent_blp.error(403, QUOTA)
    @agent_blp.error(404, NO_AGENT)
    @agent_blp.error(409, DEPLOY_CONFLICT)
    @agent_blp.error(503, ENGINE_DOWN)
    @agent_blp.doc(operationId="deployAgentFromBody", tags=[TAG], **DEPLOYMENT_LINKS)
    def post(self, data: dict[str, Any]) -> Deployment:
        """Deploy an agent (agent in the body)

        The same as `POST /v1/deployments` with an `agent_id` (a deploy straight from a repository or an
        image is `POST /v1/deployments`'s): a new deployment in `deploying`, 202 at once.
        """
        agent_id = data.pop("agent_id")
        return _deploy(agent_id, data)


@agent_blp.route("/<string:agent_id>/deploy")
class DeployThisAgent(MethodView):
    @agent_blp.auth_required()
    @agent_blp.arguments(DeployOptionsSchema, example=DEPLOY_OPTIONS)
    @agent_blp.response(202, DeploymentSchema)
    @agent_blp.error(400, DEPLOY_INVALID)
    @agent_blp.error(403, QUOTA)
    @agent_blp.error(404, NO_AGENT)
    @agent_blp.error(409, DEPLOY_CONFLICT)
    @agent_blp.error(503, ENGINE_DOWN)
    @agent_blp.doc(operationId="deployAgent", tags=[TAG], **DEPLOYMENT_LINKS)
    def post(self, data: dict[str, Any], agent_id: str) -> Deployment:
        """Deploy this agent

        The same as `POST /v1/deployments` with this `agent_id`: a new deployment in `deploying`, 202
        at once; 409 when the agent already has a live one.
        """
        return _deploy(agent_id, data)


@agent_blp.route("/<string:agent_id>/undeploy")
class UndeployAgent(MethodView):
    @agent_blp.auth_required()
    @agent_blp.response(200, DeploymentSchema)
    @agent_blp.error(404, NO_AGENT[:-1] + ", or it has no live deployment.")
    @agent_blp.error(409, CHANGED)
    @agent_blp.error(503, ENGINE_DOWN)
    @agent_blp.doc(operationId="undeployAgent", tags=[TAG])
    def post(self, agent_id: str) -> Deployment:
        """Undeploy an agent

        Deletes (kills) the agent's live deployment, as `DELETE /v1/deployments/{id}` does; 404 when it
        has none.
        """
        deployment = service.live_deployment_of_agent(current_user(), agent_id)
        return service.delete(current_user(), deployment.id)


@agent_blp.route("/<string:agent_id>/restart")
class RestartAgent(MethodView):
    @agent_blp.auth_required()
    @agent_blp.response(202, DeploymentSchema)
    @agent_blp.error(400, RESTART_INVALID)
    @agent_blp.error(403, QUOTA)
    @agent_blp.error(404, NO_AGENT)
    @agent_blp.error(
        409, "`invalid_state`: the agent has no live deployment, or it is deploying or killed; or " + CHANGED
    )
    @agent_blp.error(503, ENGINE_DOWN)
    @agent_blp.doc(operationId="restartAgent", tags=[TAG])
    def post(self, agent_id: str) -> Deployment:
        """Restart an agent's deployment

        Restarts the agent's live deployment, as `POST /v1/deployments/{id}/restart` does; an agent
        without one is 409 `invalid_state` (the agent exists, its state does not allow this).
        """
        deployment = service.live_deployment_of_agent(current_user(), agent_id, missing="invalid_state")
        return service.restart(current_user(), deployment.id)


@agent_blp.route("/<string:agent_id>/deployment-status")
class AgentDeploymentStatus(MethodView):
    @agent_blp.auth_required()
    @agent_blp.response(200, AgentDeploymentStatusSchema)
    @agent_blp.error(404, NO_AGENT[:-1] + ", or it was never deployed.")
    @agent_blp.doc(operationId="getAgentDeploymentStatus", tags=[TAG])
    def get(self, agent_id: str) -> Deployment:
        """Get an agent's deployment status

        The status and replica counts of the agent's live deployment, else of its most recent one.
        """
        return service.agent_deployment(current_user(), agent_id)
