"""Access-token verification (deploy_service/tokens.py): its cache of verified tokens, and the header parse.

Forged, expired and misused tokens are refused on every route in tests/security/test_authentication.py
(with a control token that works); an expired token's message is checked in tests/api/test_auth.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import jwt
import pytest

from deploy_service import tokens
from deploy_service.settings import TokenSettings
from deploy_service.tokens import TokenRejected, bearer_token, decode_access_token

SETTINGS = TokenSettings(secret_key="k" * 40, algorithms=("HS256",))


def _token(**claims: Any) -> str:
    payload = {"sub": "user-1", "sid": "session-1", "type": "access", "exp": int(time.time()) + 60, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SETTINGS.secret_key, "HS256")


def test_a_valid_token_gives_its_claims_and_is_served_from_the_cache_after() -> None:
    token = _token()
    first = decode_access_token(token, SETTINGS)
    assert (first["sub"], first["sid"]) == ("user-1", "session-1")
    assert decode_access_token(token, SETTINGS) is first


def test_the_cache_forgets_a_token_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token(exp=int(time.time()) + 5)
    decode_access_token(token, SETTINGS)
    key = (SETTINGS.secret_key, token)
    assert tokens._verified.get(key, leeway=0) is not None
    later = time.time() + 10
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    assert tokens._verified.get(key, leeway=0) is None  # so the next request verifies it again (and PyJWT refuses)


def test_a_tampered_copy_of_a_cached_token_is_refused() -> None:
    token = _token()
    decode_access_token(token, SETTINGS)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(TokenRejected, match="invalid"):
        decode_access_token(forged, SETTINGS)


def test_a_token_cached_under_one_key_is_not_valid_under_another() -> None:
    token = _token()
    decode_access_token(token, SETTINGS)
    with pytest.raises(TokenRejected, match="invalid"):
        decode_access_token(token, replace(SETTINGS, secret_key="another-key-" * 4))


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Token abc"])
def test_a_missing_or_foreign_authorization_header_asks_for_a_token(header: str | None) -> None:
    with pytest.raises(TokenRejected, match="Authentication is required"):
        bearer_token(header)


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearerabc"])
def test_a_malformed_bearer_header_is_invalid(header: str) -> None:
    with pytest.raises(TokenRejected):
        bearer_token(header)
