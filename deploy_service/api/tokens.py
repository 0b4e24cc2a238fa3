"""How the JWT extension checks tokens and words its refusals.

Algorithm and lifetimes are pinned in `create_app`. Each token carries its login session (`sid`);
the session and user are read in one query per request, so a logout holds on every process at once.
Access tokens are checked by `services.auth.authenticate_access` (the hot path); these loaders serve
the refresh route and word the extension's refusals the same way.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g

from deploy_service.errors import error_response
from deploy_service.extensions import jwt
from deploy_service.models import Principal
from deploy_service.services.auth import user_for_token


def _unauthorized(message: str) -> Response:
    return error_response(401, "unauthorized", message)


@jwt.token_verification_loader
def _has_required_claims(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
    return isinstance(payload.get("exp"), int | float) and isinstance(payload.get("sid"), str)


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
    g.current_user = user_for_token(payload)
    return g.current_user is None


@jwt.user_lookup_loader
def _user(_header: dict[str, Any], _payload: dict[str, Any]) -> Principal | None:
    user: Principal | None = g.get("current_user")
    return user


@jwt.unauthorized_loader
def _missing(_reason: str) -> Response:
    return _unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")


@jwt.invalid_token_loader
def _invalid(_reason: str) -> Response:
    return _unauthorized("The token is invalid.")


@jwt.expired_token_loader
def _expired(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return _unauthorized("The token has expired.")


@jwt.revoked_token_loader
def _revoked(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return _unauthorized("The token has been revoked.")


@jwt.token_verification_failed_loader
def _claims_failed(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return _unauthorized("The token is invalid.")


@jwt.user_lookup_error_loader
def _no_user(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return _unauthorized("The token's user no longer exists.")


@jwt.needs_fresh_token_loader
def _needs_fresh(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return _unauthorized("A fresh login is required.")
