"""Per-agent API keys, and calling a deployed agent through `interact`."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, jsonify, request
from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_caller, current_user, links
from deploy_service.errors import ValidationFailed
from deploy_service.models import ApiKey
from deploy_service.models.api_key import SCOPE_INVOKE
from deploy_service.schemas.api_key import ApiKeyCreateSchema, ApiKeyPageSchema, ApiKeySchema, CreatedApiKeySchema
from deploy_service.schemas.common import PaginationArgs
from deploy_service.services import api_keys as key_service
from deploy_service.services.common import Page
from deploy_service.services.interact import interact

blp = Blueprint("api-keys", __name__, url_prefix="/v1/agents", description="Agent API keys and calling agents.")


@blp.route("/<string:agent_id>/api-key")
class CreateKey(MethodView):
    @blp.auth_required()
    @blp.arguments(ApiKeyCreateSchema)
    @blp.response(201, CreatedApiKeySchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.doc(**links(201, "key_id", "id", ("RevokeKey", "delete", "/v1/agents/{agent_id}/api-keys/{key_id}")))
    def post(self, data: dict[str, Any], agent_id: str) -> dict[str, Any]:
        """Create an API key for the agent. The key is in this response only."""
        row, key = key_service.create_key(current_user(), agent_id, **data)
        return {**{field: getattr(row, field) for field in CreatedApiKeySchema().fields if field != "key"}, "key": key}


@blp.route("/<string:agent_id>/api-keys")
class Keys(MethodView):
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, ApiKeyPageSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict[str, Any], agent_id: str) -> Page[ApiKey]:
        """The agent's keys (without the keys themselves), newest first."""
        return key_service.list_keys(current_user(), agent_id, **args)


@blp.route("/<string:agent_id>/api-keys/<string:key_id>")
class KeyItem(MethodView):
    @blp.auth_required()
    @blp.response(200, ApiKeySchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, agent_id: str, key_id: str) -> ApiKey:
        """Revoke a key: it stops working at once, on every worker."""
        return key_service.revoke_key(current_user(), agent_id, key_id)


@blp.route("/<string:agent_id>/interact")
class Interact(MethodView):
    @blp.auth_required(key_scope=SCOPE_INVOKE)
    @blp.doc(
        requestBody={
            "required": False,
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
        }
    )
    @blp.response(200, description="The agent's own status code and JSON body.")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(
        502, response="BAD_GATEWAY", description="The agent's connection failed or its answer is not JSON."
    )
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE", description="No ready replica.")
    @blp.alt_response(504, response="GATEWAY_TIMEOUT", description="The agent did not answer in time.")
    def post(self, agent_id: str) -> Response:
        """Call the deployed agent: the JSON body goes to one ready replica's `invoke_path`, in turn."""
        body = request.get_data(cache=False)
        if body.strip():
            try:
                json.loads(body)
            except ValueError as exc:
                raise ValidationFailed(
                    "The request body is not valid JSON.", details={"json": ["Invalid JSON body."]}
                ) from exc
        status, answer = interact(current_caller(), agent_id, body)
        response = jsonify(answer)
        response.status_code = status
        return response
