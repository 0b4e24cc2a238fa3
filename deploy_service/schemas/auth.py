"""Bodies of the auth and user routes."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, post_load, validate

from deploy_service.models import ROLES
from deploy_service.schemas.common import JsonBodySchema, page_schema

PASSWORD_MIN = 8
PASSWORD_MAX = 1024


class RegisterSchema(JsonBodySchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    password = fields.String(
        required=True, load_only=True, validate=validate.Length(min=PASSWORD_MIN, max=PASSWORD_MAX)
    )
    full_name = fields.String(allow_none=True, validate=validate.Length(max=200))

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["email"] = data["email"].strip().lower()
        return data


class LoginSchema(JsonBodySchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=PASSWORD_MAX))

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["email"] = data["email"].strip().lower()
        return data


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(metadata={"description": "Only in the login response."})
    token_type = fields.String(required=True, metadata={"example": "bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds until the access token expires."})


class MessageSchema(Schema):
    message = fields.String(required=True)


class UserSchema(Schema):
    id = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    full_name = fields.String(dump_only=True, allow_none=True)
    role = fields.String(dump_only=True, metadata={"enum": list(ROLES)})
    created_at = fields.DateTime(dump_only=True)


UserPageSchema = page_schema(UserSchema, "UserPage")
