"""Secret routes: values go in, names come out."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user, links
from deploy_service.models import Secret
from deploy_service.schemas.common import PaginationArgs
from deploy_service.schemas.secret import (
    SecretCreateSchema,
    SecretDetailSchema,
    SecretPageSchema,
    SecretRotateSchema,
    SecretSchema,
)
from deploy_service.services import secrets as secret_service
from deploy_service.services.common import Page
from deploy_service.services.secrets import SecretDetail

blp = Blueprint("secrets", __name__, url_prefix="/v1/secrets", description="Encrypted values agents reference by name.")


@blp.route("")
class Secrets(MethodView):
    @blp.doc(operationId="listSecrets")
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, SecretPageSchema)
    def get(self, args: dict[str, Any]) -> Page[Secret]:
        """List secrets

        Your secrets by name (an admin: everyone's); values are never returned.
        """
        return secret_service.list_secrets(current_user(), **args)

    @blp.doc(operationId="createSecret")
    @blp.auth_required()
    @blp.arguments(SecretCreateSchema, example={"name": "openai-api-key", "value": "sk-example-0123456789"})
    @blp.response(201, SecretSchema)
    @blp.error(409, "`conflict`: you already have a secret with this name.")
    @blp.doc(
        **links(
            201,
            "secret_id",
            "id",
            ("GetSecret", "get", "/v1/secrets/{secret_id}"),
            ("RotateSecret", "put", "/v1/secrets/{secret_id}"),
            ("DeleteSecret", "delete", "/v1/secrets/{secret_id}"),
        )
    )
    def post(self, data: dict[str, Any]) -> Secret:
        """Store a secret

        The value is encrypted at rest and never shown again; agents inject it as an environment
        variable by naming it in their `secrets`.
        """
        return secret_service.create_secret(current_user(), **data)


@blp.route("/<string:secret_id>")
class SecretItem(MethodView):
    @blp.doc(operationId="getSecret")
    @blp.auth_required()
    @blp.response(200, SecretDetailSchema)
    @blp.error(404, "`not_found`: no such secret, or not yours.")
    def get(self, secret_id: str) -> SecretDetail:
        """Get a secret

        Its metadata and the agents that reference it (`used_by`); never its value.
        """
        return secret_service.get_secret(current_user(), secret_id)

    @blp.doc(operationId="rotateSecret")
    @blp.auth_required()
    @blp.arguments(SecretRotateSchema, example={"value": "sk-rotated-9876543210"})
    @blp.response(200, SecretDetailSchema)
    @blp.error(404, "`not_found`: no such secret, or not yours.")
    def put(self, data: dict[str, Any], secret_id: str) -> SecretDetail:
        """Rotate a secret

        Replaces the value in place. Nothing running is touched: each agent in `used_by` gets the new value
        from its next container start, restart or release; restarting a deployment after a rotation makes
        a new release whose `changes` list `secrets.<name>` as `rotated`.
        """
        return secret_service.rotate_secret(current_user(), secret_id, **data)

    @blp.doc(operationId="deleteSecret")
    @blp.auth_required()
    @blp.response(204)
    @blp.error(404, "`not_found`: no such secret, or not yours.")
    @blp.error(409, "`conflict`: agents still reference it (`details.agent_ids`).")
    def delete(self, secret_id: str) -> None:
        """Delete a secret

        Only a secret that no agent references; remove the references first.
        """
        secret_service.delete_secret(current_user(), secret_id)
