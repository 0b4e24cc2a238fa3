"""Bodies of the user routes."""

from __future__ import annotations

from marshmallow import fields, validate

from deploy_service.models import Role
from deploy_service.schemas.agent import AgentSchema
from deploy_service.schemas.auth import UserSchema
from deploy_service.schemas.common import Choice, JsonBodySchema, PaginationArgs, page_schema
from deploy_service.schemas.deployment import DeploymentSummarySchema


class DeployedAgentSchema(AgentSchema):
    """An agent with a summary of its live deployment."""

    deployment = fields.Nested(DeploymentSummarySchema, dump_only=True)


DeployedAgentPageSchema = page_schema(DeployedAgentSchema, "DeployedAgentPage")


class AccountSchema(UserSchema):
    """An account as an admin sees it."""

    is_active = fields.Boolean(metadata={"description": "`false`: it cannot log in, and its tokens and keys fail."})
    updated_at = fields.DateTime()


AccountPageSchema = page_schema(AccountSchema, "AccountPage")


class UserListArgs(PaginationArgs):
    role = Choice(Role)
    q = fields.String(
        validate=validate.Length(max=320), metadata={"description": "Case-insensitive part of the email."}
    )
    is_active = fields.Boolean()


class UserUpdateSchema(JsonBodySchema):
    role = Choice(Role)
    is_active = fields.Boolean(
        metadata={"description": "`false` ends the user's logins and personal tokens at once; its agents' keys fail."}
    )
    full_name = fields.String(allow_none=True, validate=validate.Length(max=200))
