"""Whom a request counts against for rate limiting: its API key, else its user, else its address.

The user is read from the bearer token with its signature and expiry checked (a cheap HMAC), so a
forged token cannot spend somebody else's allowance; anything unreadable counts against the address.
Login and registration are limited per address, more tightly (see `api/auth.py`).
"""

from __future__ import annotations

import hashlib

from flask import request
from flask_limiter.util import get_remote_address

from deploy_service.settings import current_settings
from deploy_service.tokens import TokenRejected, bearer_token, decode_access_token

LIMITED_PREFIX = "/v1/"
"""Every route under this prefix is rate limited (the OpenAPI spec documents its 429 from this)."""


def caller_key() -> str:
    """The rate-limit bucket of the current request."""
    presented = request.headers.get("X-API-Key")
    if presented:
        return "key:" + hashlib.sha256(presented.encode()).hexdigest()[:24]
    authorization = request.headers.get("Authorization")
    if authorization:
        try:
            return "user:" + str(
                decode_access_token(bearer_token(authorization), current_settings().auth.tokens)["sub"]
            )
        except TokenRejected:  # any unreadable token (or a refresh token) counts against the address
            pass
    return "ip:" + (get_remote_address() or "unknown")


def default_limit() -> str:
    """Every `/v1` route: `RATE_LIMIT_PER_MINUTE` per caller."""
    return f"{current_settings().rate_limits.per_minute}/minute"


def auth_limit() -> str:
    """Login and registration: `AUTH_RATE_LIMIT_PER_MINUTE` per address."""
    return f"{current_settings().rate_limits.auth_per_minute}/minute"


def exempt_from_limits() -> bool:
    """Health checks, docs and metrics are never limited."""
    return not request.path.startswith(LIMITED_PREFIX)
