"""Secret bodies: the value goes in, only the name ever comes out."""

from __future__ import annotations

from marshmallow import fields, validate

from deploy_service.schemas.common import JsonBodySchema, ResponseSchema, page_schema
from deploy_service.schemas.validators import SECRET_NAME, FullMatch

MAX_SECRET_BYTES = 64 * 1024


class SecretCreateSchema(JsonBodySchema):
    name = fields.String(
        required=True,
        validate=FullMatch(SECRET_NAME, error="1-100 letters, digits, '_', '.' or '-', not starting with '.' or '-'."),
        metadata={"description": "What agents' `secrets` refer to."},
    )
    value = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=MAX_SECRET_BYTES))


class SecretRotateSchema(JsonBodySchema):
    value = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=MAX_SECRET_BYTES))


class SecretSchema(ResponseSchema):
    """A stored secret: its name, never its value."""

    id = fields.String()
    name = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


SecretPageSchema = page_schema(SecretSchema, "SecretPage")


class SecretDetailSchema(SecretSchema):
    """A secret's metadata, with the agents that reference it; never its value."""

    used_by = fields.List(
        fields.String(),
        metadata={
            "description": "Ids of the agents that reference it (in `secrets` or as `registry_auth.password_secret`): "
            "after a rotation each gets the new value from its next start, restart or release."
        },
    )
