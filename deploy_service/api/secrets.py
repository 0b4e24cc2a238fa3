"""Secret routes: values go in, names come out."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user, links
from deploy_service.models import Secret
from deploy_service.schemas.common import PaginationArgs
from deploy_service.schemas.secret import SecretCreateSchema, SecretPageSchema, SecretSchema
from deploy_service.services import secrets as secret_service
from deploy_service.services.common import Page

blp = Blueprint("secrets", __name__, url_prefix="/v1/secrets", description="Encrypted values agents reference by name.")


@blp.route("")
class Secrets(MethodView):
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, SecretPageSchema)
    def get(self, args: dict[str, Any]) -> Page[Secret]:
        """List secrets by name (values are never returned)."""
        return secret_service.list_secrets(current_user(), **args)

    @blp.auth_required()
    @blp.arguments(SecretCreateSchema)
    @blp.response(201, SecretSchema)
    @blp.alt_response(409, response="CONFLICT", description="A secret with this name exists.")
    @blp.doc(**links(201, "secret_id", "id", ("DeleteSecret", "delete", "/v1/secrets/{secret_id}")))
    def post(self, data: dict[str, Any]) -> Secret:
        """Store a secret; its value is encrypted at rest and never shown again."""
        return secret_service.create_secret(current_user(), **data)


@blp.route("/<string:secret_id>")
class SecretItem(MethodView):
    @blp.auth_required()
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="Agents still reference it.")
    def delete(self, secret_id: str) -> None:
        """Delete a secret no agent references."""
        secret_service.delete_secret(current_user(), secret_id)
