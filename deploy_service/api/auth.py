"""Registration, login, token refresh, logout and the current user."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_limiter.util import get_remote_address

from deploy_service.api.common import Blueprint, current_session_id, current_user, links
from deploy_service.models import PersonalToken, Principal, User
from deploy_service.ratelimit import auth_limit, limiter
from deploy_service.schemas.auth import (
    AccessTokenSchema,
    LoginSchema,
    MessageSchema,
    RegisterSchema,
    TokenSchema,
    UserSchema,
)
from deploy_service.schemas.common import PaginationArgs
from deploy_service.schemas.personal_token import (
    CreatedTokenSchema,
    PersonalTokenPageSchema,
    PersonalTokenSchema,
    TokenCreateSchema,
)
from deploy_service.services import auth as auth_service
from deploy_service.services import personal_tokens as token_service
from deploy_service.services.common import Page

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Accounts and tokens.")

CREDENTIALS_EXAMPLE = {"email": "ada@example.com", "password": "correct-horse-battery"}


@blp.route("/register")
class Register(MethodView):
    decorators = [limiter.shared_limit(auth_limit, scope="auth", key_func=get_remote_address)]

    @blp.doc(operationId="register")
    @blp.arguments(RegisterSchema, example={**CREDENTIALS_EXAMPLE, "full_name": "Ada Lovelace"})
    @blp.response(201, UserSchema)
    @blp.error(403, "`forbidden`: registration is disabled (`REGISTRATION_ENABLED` is off).")
    @blp.error(409, "`conflict`: a user with this email exists.")
    def post(self, data: dict[str, Any]) -> User:
        """Register a user

        Creates an account; no credentials needed (rate limited per client address with login). The
        first account ever becomes an admin, every later one gets `DEFAULT_ROLE` (default `developer`); with
        `ENVIRONMENT=production` every one gets `DEFAULT_ROLE` (the admin is made with `flask create-admin`).
        Log in afterwards to get tokens.
        """
        return auth_service.register(**data)


@blp.route("/login")
class Login(MethodView):
    decorators = [limiter.shared_limit(auth_limit, scope="auth", key_func=get_remote_address)]

    @blp.doc(operationId="login")
    @blp.arguments(LoginSchema, example=CREDENTIALS_EXAMPLE)
    @blp.response(200, TokenSchema)
    @blp.error(401, "`unauthorized`: unknown email, wrong password or inactive user (one answer for all).")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Log in

        Checks the credentials and opens a login session: an access token for every other route and
        a refresh token for `refreshToken`. Rate limited per client address.
        """
        return auth_service.login(**data)


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.doc(operationId="refreshToken")
    @blp.auth_required(refresh=True)
    @blp.response(200, AccessTokenSchema)
    def post(self) -> dict[str, Any]:
        """Refresh the access token

        Send the refresh token (not the access token) as the Bearer token: a new access token in the
        same login session. 401 once the session was logged out or has expired.
        """
        return auth_service.refresh(user=current_user(), session_id=current_session_id())


@blp.route("/logout")
class Logout(MethodView):
    @blp.doc(operationId="logout")
    @blp.auth_required()
    @blp.response(200, MessageSchema)
    def post(self) -> dict[str, str]:
        """Log out

        Ends the token's login session: its access and refresh tokens stop working at once, on every
        process. Logging out twice is a 401 (the token no longer works).
        """
        auth_service.logout(session_id=current_session_id())
        return {"message": "Logged out."}


@blp.route("/me")
class Me(MethodView):
    @blp.doc(operationId="getCurrentUser")
    @blp.auth_required()
    @blp.response(200, UserSchema)
    def get(self) -> Principal:
        """The current user

        The account the access token (or personal access token, whatever its scopes) speaks for.
        """
        return current_user()


@blp.route("/api-keys")
class PersonalTokens(MethodView):
    @blp.doc(operationId="createPersonalToken")
    @blp.auth_required()
    @blp.arguments(TokenCreateSchema, example={"name": "ci", "scopes": ["read", "deploy"], "expires_in_days": 90})
    @blp.response(201, CreatedTokenSchema)
    @blp.error(403, "`forbidden`: a scope beyond what your role allows (`details.scopes` lists those it does).")
    @blp.doc(**links(201, "token_id", "id", ("RevokeToken", "delete", "/v1/auth/api-keys/{token_id}")))
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a personal access token

        A token (`dsp_...`) for scripts, CI and the CLI that acts as you within its scopes. The token is in
        this response only: the service stores a hash. Needs a login (a token cannot mint tokens).
        """
        row, key = token_service.create_token(current_user(), **data)
        return {**{field: getattr(row, field) for field in CreatedTokenSchema().fields if field != "key"}, "key": key}

    @blp.doc(operationId="listPersonalTokens")
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, PersonalTokenPageSchema)
    def get(self, args: dict[str, Any]) -> Page[PersonalToken]:
        """List personal access tokens

        Your tokens, newest first, revoked ones included; never the tokens themselves.
        """
        return token_service.list_tokens(current_user(), **args)


@blp.route("/api-keys/<string:token_id>")
class PersonalTokenItem(MethodView):
    @blp.doc(operationId="revokePersonalToken")
    @blp.auth_required()
    @blp.response(200, PersonalTokenSchema)
    @blp.error(404, "`not_found`: no such token of yours.")
    def delete(self, token_id: str) -> PersonalToken:
        """Revoke a personal access token

        It stops working at once, on every worker (401). Revoking again answers the same.
        """
        return token_service.revoke_token(current_user(), token_id)
