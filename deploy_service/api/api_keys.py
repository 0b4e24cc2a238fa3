"""Per-agent API keys, and calling a deployed agent through `interact`."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request, stream_with_context
from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_caller, current_user, json_body, links
from deploy_service.errors import ValidationFailed
from deploy_service.models import ApiKey
from deploy_service.schemas.api_key import ApiKeyCreateSchema, ApiKeyPageSchema, ApiKeySchema, CreatedApiKeySchema
from deploy_service.schemas.common import PaginationArgs
from deploy_service.services import api_keys as key_service
from deploy_service.services.common import Page
from deploy_service.services.interact import interact
from deploy_service.services.interact_stream import Relay, interact_stream

SESSION_HEADER = "X-Session-Id"
SESSION_ID_MAX = 200


def session_header(value: str | None) -> str | None:
    """The `X-Session-Id` of a call, checked: 1 to `SESSION_ID_MAX` printable ASCII characters, or None.

    Raises:
        ValidationFailed: empty, too long, or with a character outside printable ASCII.
    """
    if value is None:
        return None
    if not 1 <= len(value) <= SESSION_ID_MAX or not all(" " <= char <= "~" for char in value):
        message = f"{SESSION_HEADER} must be 1 to {SESSION_ID_MAX} printable ASCII characters."
        raise ValidationFailed(message, details={SESSION_HEADER: [message]})
    return value


def wants_stream() -> bool:
    """Whether the caller asked for a streamed answer: `text/event-stream` named in `Accept` (not `*/*`)."""
    return any(kind == "text/event-stream" and quality > 0 for kind, quality in request.accept_mimetypes)


blp = Blueprint("api-keys", __name__, url_prefix="/v1/agents", description="Agent API keys.")

# The agent's own JSON, in and out: any JSON value. A union of the JSON types rather than `{}`, so that
# generated clients type the answer (`object | list | str | ...`) instead of dropping it.
AGENT_JSON: dict[str, Any] = {
    "description": "Any JSON value: the agent's own body.",
    "anyOf": [
        {"type": "object", "additionalProperties": True},
        {"type": "array", "items": {}},
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ],
}


@blp.route("/<string:agent_id>/api-key")
class CreateKey(MethodView):
    @blp.doc(operationId="createApiKey")
    @blp.auth_required()
    @blp.arguments(ApiKeyCreateSchema, example={"name": "ci", "expires_in_days": 90, "scopes": ["invoke", "telemetry"]})
    @blp.response(201, CreatedApiKeySchema)
    @blp.error(404, "`not_found`: no such agent, or not yours.")
    @blp.doc(**links(201, "key_id", "id", ("RevokeKey", "delete", "/v1/agents/{agent_id}/api-keys/{key_id}")))
    def post(self, data: dict[str, Any], agent_id: str) -> dict[str, Any]:
        """Create an API key

        A key for the agent, with the scopes it opens (`invoke`: `interactWithAgent`; `telemetry`:
        `createEvaluation`; `results`: the deployment results routes). The key is in this response
        only: the service stores a hash.
        """
        row, key = key_service.create_key(current_user(), agent_id, **data)
        return {**{field: getattr(row, field) for field in CreatedApiKeySchema().fields if field != "key"}, "key": key}


@blp.route("/<string:agent_id>/api-keys")
class Keys(MethodView):
    @blp.doc(operationId="listApiKeys")
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, ApiKeyPageSchema)
    @blp.error(404, "`not_found`: no such agent, or not yours.")
    def get(self, args: dict[str, Any], agent_id: str) -> Page[ApiKey]:
        """List an agent's API keys

        The agent's keys, revoked ones included, newest first: their prefixes, never the keys.
        """
        return key_service.list_keys(current_user(), agent_id, **args)


@blp.route("/<string:agent_id>/api-keys/<string:key_id>")
class KeyItem(MethodView):
    @blp.doc(operationId="revokeApiKey")
    @blp.auth_required()
    @blp.response(200, ApiKeySchema)
    @blp.error(404, "`not_found`: no such agent or key, or not yours.")
    def delete(self, agent_id: str, key_id: str) -> ApiKey:
        """Revoke an API key

        The key stops working at once, on every worker; it stays listed with `revoked_at`. Revoking
        it again answers the same.
        """
        return key_service.revoke_key(current_user(), agent_id, key_id)


@blp.route("/<string:agent_id>/interact")
class Interact(MethodView):
    @blp.doc(
        operationId="interactWithAgent",
        tags=["agents"],
        parameters=[
            {
                "in": "header",
                "name": SESSION_HEADER,
                "required": False,
                "description": "A conversation's id: its calls go to the same ready replica while it stays ready. "
                f"1 to {SESSION_ID_MAX} printable ASCII characters.",
                "schema": {"type": "string", "minLength": 1, "maxLength": SESSION_ID_MAX},
            }
        ],
        requestBody={
            "required": False,
            "description": "Forwarded as is; no body is sent as `{}`.",
            "content": {"application/json": {"schema": AGENT_JSON, "example": {"question": "What is my balance?"}}},
        },
        responses={
            200: {
                "content": {
                    "application/json": {"schema": AGENT_JSON},
                    "text/event-stream": {
                        "schema": {
                            "type": "string",
                            "description": "With `Accept: text/event-stream`: the agent's own streamed answer "
                            "(its events, or its chunked text), passed on piece by piece as it comes, with its "
                            "`Content-Type`.",
                        }
                    },
                }
            }
        },
    )
    @blp.auth_required()
    @blp.response(
        200,
        description="The agent's answer. Its own status code is passed through, so a 2xx other than 200 (or a "
        "4xx) may come with the agent's body too.",
    )
    @blp.error(
        400,
        "`validation_error`: the body is not valid JSON, or `X-Session-Id` is empty, too long or not printable ASCII.",
    )
    @blp.error(404, "`not_found`: no such agent, not yours, or a key of another agent.")
    @blp.error(409, "`invalid_state`: the agent is a job (kind `job`), which gets no calls.")
    @blp.error(
        502,
        "`bad_gateway`: no ready replica took the connection, the connection failed after the request was sent, "
        "or the answer is not JSON or too large.",
    )
    @blp.error(
        503,
        "`no_ready_replica`: the agent is not deployed, or no replica is ready; or `streams_busy` (with "
        "`Retry-After: 1`, `details.limit`): a streamed call, and this worker already relays "
        "`INTERACT_STREAMS_PER_WORKER` streams.",
    )
    @blp.error(504, "`agent_timeout`: the agent did not answer within `INTERACT_TIMEOUT_SECONDS`.")
    def post(self, agent_id: str) -> Response:
        """Call an agent

        The JSON body goes to one ready replica's `invoke_path`, and the agent's status and JSON
        answer come back. Without `X-Session-Id` the ready replicas are taken in turn; with it, calls
        of the same session go to the same ready replica while it stays ready (then to another, and
        only that replica's sessions move). A replica that does not take the connection is passed
        over for the next ready one; a request that reached a replica is never sent twice. Takes the
        owner's token, or an agent's API key with the `invoke` scope (`X-API-Key`). Every call counts
        in `getAgentStats` and `listInvocations`.

        With `Accept: text/event-stream`, the agent's answer comes back as it sends it (events, or
        chunked text), piece by piece, never buffered whole; a JSON answer still comes back as JSON.
        The stream ends with the agent's answer, when the agent is silent for
        `INTERACT_TIMEOUT_SECONDS`, or after `INTERACT_STREAM_MAX_SECONDS`; closing it closes the
        agent's connection. Each stream holds one server thread, so a worker relays at most
        `INTERACT_STREAMS_PER_WORKER` at once: one more is a 503 `streams_busy` with `Retry-After`.
        """
        session_id = session_header(request.headers.get(SESSION_HEADER))
        body = request.get_data(cache=False)
        if body.strip():
            json_body(body)
        if wants_stream():
            answered = interact_stream(current_caller(), agent_id, body, session_id=session_id)
            if isinstance(answered, Relay):
                streamed = Response(
                    stream_with_context(answered.chunks()),
                    status=answered.status,
                    content_type=answered.content_type,
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
                streamed.call_on_close(answered.close)  # the agent's connection closes even if never iterated
                return streamed
            status, answer = answered
        else:
            status, answer = interact(current_caller(), agent_id, body, session_id=session_id)
        response = jsonify(answer)
        response.status_code = status
        return response
