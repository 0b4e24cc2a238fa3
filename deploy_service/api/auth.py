"""Registration, login, token refresh, logout and the current user."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_limiter.util import get_remote_address

from deploy_service.api.common import Blueprint, current_session_id, current_user
from deploy_service.extensions import limiter
from deploy_service.models import Principal, User
from deploy_service.ratelimit import auth_limit
from deploy_service.schemas.auth import LoginSchema, MessageSchema, RegisterSchema, TokenSchema, UserSchema
from deploy_service.services import auth as auth_service

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Accounts and tokens.")


@blp.route("/register")
class Register(MethodView):
    decorators = [limiter.shared_limit(auth_limit, scope="auth", key_func=get_remote_address)]

    @blp.arguments(RegisterSchema)
    @blp.response(201, UserSchema)
    @blp.alt_response(403, response="FORBIDDEN", description="Registration is disabled.")
    @blp.alt_response(409, response="CONFLICT", description="The email is taken.")
    def post(self, data: dict[str, Any]) -> User:
        """Register a user. The first user ever registered becomes admin."""
        return auth_service.register(**data)


@blp.route("/login")
class Login(MethodView):
    decorators = [limiter.shared_limit(auth_limit, scope="auth", key_func=get_remote_address)]

    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, response="UNAUTHORIZED", description="Bad credentials.")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Log in: an access token and a refresh token."""
        return auth_service.login(**data)


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.auth_required(refresh=True)
    @blp.response(200, TokenSchema)
    def post(self) -> dict[str, Any]:
        """A new access token, given the refresh token as the Bearer token."""
        return auth_service.refresh(user=current_user(), session_id=current_session_id())


@blp.route("/logout")
class Logout(MethodView):
    @blp.auth_required()
    @blp.response(200, MessageSchema)
    def post(self) -> dict[str, str]:
        """Log out: this token and its refresh token stop working everywhere."""
        auth_service.logout(session_id=current_session_id())
        return {"message": "Logged out."}


@blp.route("/me")
class Me(MethodView):
    @blp.auth_required()
    @blp.response(200, UserSchema)
    def get(self) -> Principal:
        """The current user."""
        return current_user()
