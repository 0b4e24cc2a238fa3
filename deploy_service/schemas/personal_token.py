"""Personal access token bodies: the token itself appears only in the response that creates it."""

from __future__ import annotations

from marshmallow import fields, validate

from deploy_service.models import TokenScope
from deploy_service.schemas.common import Choice, JsonBodySchema, ResponseSchema, page_schema


class TokenCreateSchema(JsonBodySchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    scopes = fields.List(
        Choice(TokenScope),
        validate=validate.Length(min=1),
        metadata={
            "description": 'Default: `["read"]`. `read`: every GET you may make; `write`: create, update and '
            "delete agents, secrets, webhooks and keys, report results, call `interact`; `deploy`: deploy, scale, "
            "restart, stop, roll back and delete deployments. Never more than your role allows (a `user` may "
            "hold `read` only)."
        },
    )
    expires_in_days = fields.Integer(
        validate=validate.Range(min=1, max=3650), metadata={"description": "Default: never."}
    )


class PersonalTokenSchema(ResponseSchema):
    """A token as lists show it: never the token, only its first characters."""

    id = fields.String()
    name = fields.String()
    prefix = fields.String()
    scopes = fields.List(Choice(TokenScope))
    created_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(
        allow_none=True, metadata={"description": "Updated at most once per `API_KEY_LAST_USED_RESOLUTION_SECONDS`."}
    )
    revoked_at = fields.DateTime(allow_none=True)


class CreatedTokenSchema(ResponseSchema):
    """The one response that shows the token."""

    id = fields.String()
    name = fields.String()
    key = fields.String(
        metadata={"description": "Shown once; store it now. Send it as `Authorization: Bearer dsp_...` or `X-API-Key`."}
    )
    prefix = fields.String()
    scopes = fields.List(Choice(TokenScope))
    created_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)


PersonalTokenPageSchema = page_schema(PersonalTokenSchema, "PersonalTokenPage")
