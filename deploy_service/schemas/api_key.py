"""API key bodies: the key itself appears only in the response that creates it."""

from __future__ import annotations

from marshmallow import fields, validate

from deploy_service.models import SCOPES, ApiKeyScope
from deploy_service.schemas.common import Choice, JsonBodySchema, ResponseSchema, page_schema


class ApiKeyCreateSchema(JsonBodySchema):
    name = fields.String(
        validate=validate.Length(min=1, max=100), metadata={"description": "Default: `key-<UTC timestamp>`."}
    )
    expires_in_days = fields.Integer(
        validate=validate.Range(min=1, max=3650), metadata={"description": "Default: never."}
    )
    scopes = fields.List(
        Choice(ApiKeyScope),
        validate=validate.Length(min=1),
        metadata={"description": f"Default: all of {', '.join(SCOPES)}."},
    )


class ApiKeySchema(ResponseSchema):
    """A key as lists show it: never the key, only its first characters."""

    id = fields.String()
    agent_id = fields.String()
    name = fields.String()
    prefix = fields.String()
    scopes = fields.List(Choice(ApiKeyScope))
    created_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


class CreatedApiKeySchema(ResponseSchema):
    """The one response that shows the key."""

    id = fields.String()
    name = fields.String()
    key = fields.String(metadata={"description": "Shown once; store it now. Send it as `X-API-Key`."})
    prefix = fields.String()
    scopes = fields.List(Choice(ApiKeyScope))
    created_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)


ApiKeyPageSchema = page_schema(ApiKeySchema, "ApiKeyPage")
