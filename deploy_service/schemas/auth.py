"""Bodies of the auth and user routes."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, post_load, validate

from deploy_service.models import Role
from deploy_service.schemas.common import Choice, JsonBodySchema, ResponseSchema, page_schema

PASSWORD_MIN = 8
PASSWORD_MAX = 1024


class RegisterSchema(JsonBodySchema):
    """A new account: the email is stored lower-cased."""

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
    """Credentials (the email is matched case-insensitively)."""

    email = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=PASSWORD_MAX))

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["email"] = data["email"].strip().lower()
        return data


class AccessTokenSchema(ResponseSchema):
    """A new access token (`POST /v1/auth/refresh`)."""

    access_token = fields.String(metadata={"description": "Send it as `Authorization: Bearer <token>`."})
    token_type = fields.String(metadata={"example": "bearer"})
    expires_in = fields.Integer(metadata={"description": "Seconds until the access token expires."})


class TokenSchema(AccessTokenSchema):
    """The tokens of a new login session (`POST /v1/auth/login`)."""

    refresh_token = fields.String(
        metadata={"description": "For `POST /v1/auth/refresh`, as the Bearer token; lives as long as the session."}
    )


class MessageSchema(ResponseSchema):
    """A confirmation sentence."""

    message = fields.String(metadata={"example": "Logged out."})


class UserSchema(ResponseSchema):
    """A user account (never its password)."""

    id = fields.String()
    email = fields.String(metadata={"format": "email"})
    full_name = fields.String(allow_none=True)
    role = Choice(Role)
    created_at = fields.DateTime()


UserPageSchema = page_schema(UserSchema, "UserPage")
