"""The rate limiter, and whom a request counts against: the credential that authenticates it, else its address.

The bucket follows the auth check (`api.common.Blueprint.auth_required`): a request with a bearer token is
the token's, whatever `X-API-Key` rides along, so it counts in the token's user's bucket when the token's
signature and expiry hold (a cheap HMAC, cached per token in `tokens`); a request with only a key counts in
the key's bucket when the key is live. The key is verified once per request (`api_keys.verified_key`
keeps the answer on `flask.g` for the view's auth check), and a mistyped or made-up key is refused by its
checksum before any lookup. Anything unverifiable (a garbage, unknown, revoked or expired key; a forged,
expired or refresh token) counts against the address, so an invented header never buys a fresh bucket.
Login and registration are limited per address, more tightly (see `api/auth.py`).

The limiter lives here rather than in `extensions`, because its key function needs the API key service,
which sits above `extensions`; it is created unbound all the same and bound in `create_app`.
"""

from __future__ import annotations

from flask import request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from deploy_service.services.api_keys import verified_key
from deploy_service.settings import current_settings
from deploy_service.tokens import TokenRejected, bearer_token, decode_access_token

LIMITED_PREFIX = "/v1/"
"""Every route under this prefix is rate limited (the OpenAPI spec documents its 429 from this)."""

API_KEY_HEADER = "X-API-Key"


def caller_key() -> str:
    """The rate-limit bucket of the current request: `user:<id>`, `key:<id>` or `ip:<address>`."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        try:
            claims = decode_access_token(bearer_token(authorization), current_settings().auth.tokens)
        except TokenRejected:
            return _address()
        return f"user:{claims['sub']}"
    presented = request.headers.get(API_KEY_HEADER)
    if presented is not None:
        key = verified_key(presented)
        if key is not None:
            return f"key:{key.id}"
    return _address()


def _address() -> str:
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


limiter = Limiter(key_func=caller_key, default_limits=[default_limit], headers_enabled=True)
limiter.request_filter(exempt_from_limits)
