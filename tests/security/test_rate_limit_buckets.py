"""Rate-limit buckets come from the credential that authenticates the request, never from a header as sent.

The attack: send a fresh made-up `X-API-Key` with every request (beside a valid token, or alone), so each
request lands in a bucket of its own and no limit ever applies. What the service does: a valid token
counts in its user's bucket whatever key rides along; a valid, live key in its own; anything it cannot
verify (a garbage or well-formed but unknown key, a revoked key, a forged or expired token) in the
client address's. The limiter is process-wide, so these tests bind it to an app of their own with
`RATELIMIT_ENABLED` and a small limit, and leave it disabled again afterwards.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token

from deploy_service.extensions import db
from deploy_service.models import User
from deploy_service.ratelimit import LIMITED_PREFIX, limiter
from deploy_service.security import generate_api_key
from deploy_service.services import api_keys as key_service
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from tests.factories import AuthActions, UserRef, make_agent
from tests.fakes import FakeRunner
from tests.helpers import assert_error
from tests.security.routes import ANON, PROBES, Probe

LIMIT = 3
EVALUATION = {"prompt": "p", "response": "r"}


@pytest.fixture()
def limited(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    """A client of an app whose `/v1` routes allow `LIMIT` requests a minute per bucket."""
    monkeypatch.setattr(limiter, "enabled", limiter.enabled)  # the shared app stays unlimited afterwards
    other = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_PER_MINUTE=LIMIT, AUTH_RATE_LIMIT_PER_MINUTE=1000)
    other.extensions[RUNNER_KEY] = FakeRunner()
    limiter.reset()
    yield other.test_client()
    limiter.reset()
    with other.app_context():
        db.engine.dispose()


def _key(app: Flask, owner: UserRef, *, revoked: bool = False) -> str:
    """A key (all scopes) of a new agent of `owner`, live or revoked."""
    agent = make_agent(app, owner)
    with app.app_context():
        actor = db.session.get(User, owner.id)
        row, key = key_service.create_key(actor, agent["id"], name="k")
        if revoked:
            key_service.revoke_key(actor, agent["id"], row.id)
        return key


def _made_up_keys() -> Iterator[str]:
    """Keys nobody issued: alternately garbage and well-formed (right shape and checksum, so looked up)."""
    while True:
        yield "dsk_" + secrets.token_hex(8)
        yield generate_api_key()


def test_made_up_keys_beside_a_token_count_in_the_users_bucket(
    limited: FlaskClient, auth: AuthActions, app: Flask
) -> None:
    _, headers = auth.user()
    _, other_headers = auth.user()
    keys = _made_up_keys()
    statuses = [
        limited.get("/v1/agents", headers={**headers, "X-API-Key": next(keys)}).status_code for _ in range(LIMIT)
    ]
    assert statuses == [200] * LIMIT
    assert_error(limited.get("/v1/agents", headers={**headers, "X-API-Key": next(keys)}), 429, "rate_limited")
    assert_error(limited.get("/v1/agents", headers=headers), 429, "rate_limited")
    assert limited.get("/v1/agents", headers=other_headers).status_code == 200  # another user's own bucket
    assert limited.get("/v1/agents").status_code == 401  # the address's bucket is untouched


def test_made_up_keys_and_bad_tokens_alone_share_the_address_bucket(limited: FlaskClient, app: Flask) -> None:
    keys = _made_up_keys()
    with app.app_context():
        expired = create_access_token(identity="someone", expires_delta=timedelta(seconds=-60))
    claims = {"sub": "someone", "sid": "s", "type": "access", "exp": 2**40}
    forged = jwt.encode(claims, "not-our-signing-key-" * 2, "HS256")
    attempts: list[dict[str, str]] = [
        {"X-API-Key": next(keys)},
        {"X-API-Key": next(keys)},
        {"Authorization": f"Bearer {forged}", "X-API-Key": next(keys)},
    ]
    assert len(attempts) == LIMIT
    assert [limited.get("/v1/agents", headers=headers).status_code for headers in attempts] == [403, 403, 401]
    for headers in ({"X-API-Key": next(keys)}, {"Authorization": f"Bearer {expired}"}, {}):
        assert_error(limited.get("/v1/agents", headers=headers), 429, "rate_limited")


def test_a_valid_key_has_its_own_bucket_and_a_revoked_one_none(
    limited: FlaskClient, auth: AuthActions, app: Flask
) -> None:
    owner, headers = auth.user()
    key, revoked = _key(app, owner), _key(app, owner, revoked=True)

    def record(presented: str) -> Any:
        return limited.post("/v1/evaluations", headers={"X-API-Key": presented}, json=EVALUATION)

    keys = _made_up_keys()
    assert [record(presented).status_code for presented in (revoked, next(keys), next(keys))] == [401] * LIMIT
    assert_error(record(revoked), 429, "rate_limited")  # it counted in the address's bucket, as made-up keys do
    assert [record(key).status_code for _ in range(LIMIT)] == [201] * LIMIT
    assert_error(record(key), 429, "rate_limited")
    assert limited.get("/v1/evaluations", headers=headers).status_code == 200  # the owner's bucket is apart


def test_a_key_is_looked_up_once_per_request(
    limited: FlaskClient, auth: AuthActions, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limiter (which picks the key's bucket) and the view's auth check share one read of the key."""
    owner, _ = auth.user()
    key = _key(app, owner)
    lookups: list[Any] = []
    real = key_service._KEY_AND_OWNER.first

    def first(params: Any) -> Any:
        lookups.append(params)
        return real(params)

    monkeypatch.setattr(key_service._KEY_AND_OWNER, "first", first)
    assert limited.post("/v1/evaluations", headers={"X-API-Key": key}, json=EVALUATION).status_code == 201
    assert len(lookups) == 1, lookups


def _engine_of(client: FlaskClient) -> Any:
    with client.application.app_context():
        return db.engine


@pytest.mark.parametrize("probe", PROBES, ids=lambda probe: probe.id)
def test_every_v1_route_is_limited_and_no_other_route_is(limited: FlaskClient, probe: Probe) -> None:
    """The limiter runs for the blueprints under /v1 only (issue 15): that must still be every /v1 route.

    The attack: find a /v1 route the narrowing left out, and hammer it unlimited. Each probe is sent
    anonymously LIMIT + 1 times (the check runs before authentication, so the ip bucket counts even a
    401); a /v1 route then answers 429 (login and registration count in their own, larger allowance
    here), and a route outside /v1 never does nor counts at all.
    """
    ids = {name: str(uuid.uuid4()) for name in probe.placeholders()}
    url, body = probe.render(ids)
    responses = [limited.open(url, method=probe.method, json=body) for _ in range(LIMIT + 1)]
    if probe.access == ANON:
        assert [response.headers["X-RateLimit-Remaining"] for response in responses[-2:]] == ["997", "996"]
    elif probe.rule.startswith(LIMITED_PREFIX):
        assert all("X-RateLimit-Limit" in response.headers for response in responses)
        assert_error(responses[-1], 429, "rate_limited")
    else:
        assert [response.status_code for response in responses if response.status_code == 429] == []
        assert all("X-RateLimit-Limit" not in response.headers for response in responses)
