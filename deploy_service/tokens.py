"""Verifying access tokens: the check every authenticated request makes, and the rate limiter's key.

A leaf module (it imports nothing of the service's own but the settings leaf): the rate limiter's key
(`ratelimit`) needs it as much as the auth check in `services.auth`. It is straight PyJWT rather than
the JWT extension's request machinery, which cost three times as much per request; the refusals are
worded like the extension's loaders in `api/tokens.py`. Tokens are still issued by the extension.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import jwt

from deploy_service.settings import TokenSettings

REQUIRED_CLAIMS = ["exp", "sub", "sid", "type"]
VERIFIED_CACHE_SIZE = 4096


class TokenRejected(Exception):
    """The token cannot be used; `message` says why, in words fit for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header.

    Raises:
        TokenRejected: no header, another scheme, or a malformed one.
    """
    if not header or not header.startswith("Bearer"):
        raise TokenRejected("Authentication is required: send 'Authorization: Bearer <token>'.")
    parts = header.split()
    if len(parts) != 2 or parts[0] != "Bearer":
        raise TokenRejected("The token is invalid.")
    return parts[1]


class _VerifiedTokens:
    """The claims of access tokens whose signature this process has already checked, until they expire.

    A token is a fixed string signed by the server, so once its signature and claims have checked out
    they stay checked until `exp`: a hit skips the HMAC and base64 work (two thirds of an authenticated
    read). Only tokens that passed verification are stored, keyed by the whole token, so a forged or
    altered token can never hit. Revocation is not cached: the caller still reads the login session from
    the database on every request. Bounded (least recently used out) and thread-safe.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._claims: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], *, leeway: float) -> dict[str, Any] | None:
        with self._lock:
            claims = self._claims.get(key)
            if claims is None:
                return None
            if claims["exp"] + leeway <= time.time():
                del self._claims[key]
                return None
            self._claims.move_to_end(key)
            return claims

    def put(self, key: tuple[str, str], claims: dict[str, Any]) -> None:
        with self._lock:
            self._claims[key] = claims
            if len(self._claims) > self._size:
                self._claims.popitem(last=False)


_verified = _VerifiedTokens(VERIFIED_CACHE_SIZE)


def decode_access_token(token: str, settings: TokenSettings) -> dict[str, Any]:
    """The claims of a valid access token: signature (the pinned algorithms), expiry, required claims.

    Raises:
        TokenRejected: expired, badly signed, malformed, a refresh token, or a required claim missing.
    """
    leeway = settings.leeway
    key = (settings.secret_key, token)  # per signing key: two apps in one process never mix
    cached = _verified.get(key, leeway=leeway)
    if cached is not None:
        return cached
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.secret_key,
            algorithms=list(settings.algorithms),
            leeway=leeway,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected("The token has expired.") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRejected("The token is invalid.") from exc
    if claims["type"] != "access" or not isinstance(claims["sid"], str) or not isinstance(claims["sub"], str):
        raise TokenRejected("The token is invalid.")
    _verified.put(key, claims)
    return claims
