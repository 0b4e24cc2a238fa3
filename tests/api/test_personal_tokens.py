"""Personal access tokens (`dsp_`): issued once, scoped, capped by the role, revoked at once on every worker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import PersonalToken
from deploy_service.models.types import utcnow
from deploy_service.ratelimit import limiter
from deploy_service.security import PERSONAL_TOKEN_PREFIX, api_key_hash, api_key_well_formed
from deploy_service.services import personal_tokens
from deploy_service.settings import Settings
from tests.factories import AuthActions, make_agent
from tests.helpers import Clock, assert_error


def mint(client: FlaskClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/auth/api-keys", headers=headers, json={"name": "ci", **body})
    assert response.status_code == 201, response.get_json()
    created: dict[str, Any] = response.get_json()
    return created


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_create_list_and_revoke(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    created = mint(client, headers, scopes=["read", "deploy"], expires_in_days=30)
    token = created["key"]
    assert token.startswith(PERSONAL_TOKEN_PREFIX) and api_key_well_formed(token, PERSONAL_TOKEN_PREFIX)
    assert created["prefix"] == token[:12] and created["scopes"] == ["deploy", "read"]
    assert created["expires_at"] is not None
    default = mint(client, headers)
    assert default["scopes"] == ["read"] and default["expires_at"] is None
    listing = client.get("/v1/auth/api-keys", headers=headers).get_json()
    assert [item["id"] for item in listing["items"]] == [default["id"], created["id"]]
    assert all("key" not in item for item in listing["items"])
    with app.app_context():  # stored only as a keyed hash
        row = db.session.get(PersonalToken, created["id"])
        assert row is not None and row.key_hash == api_key_hash(token) and token not in row.key_hash
    me = client.get("/v1/auth/me", headers=bearer(token))
    assert me.status_code == 200 and me.get_json()["id"] == user.id
    revoked = client.delete(f"/v1/auth/api-keys/{created['id']}", headers=headers)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"] is not None
    assert client.delete(f"/v1/auth/api-keys/{created['id']}", headers=headers).status_code == 200  # idempotent
    assert_error(client.get("/v1/auth/me", headers=bearer(token)), 401, "unauthorized")
    _, stranger = auth.user()
    assert_error(client.delete(f"/v1/auth/api-keys/{default['id']}", headers=stranger), 404, "not_found")
    assert client.get("/v1/auth/api-keys", headers=stranger).get_json()["total"] == 0


def test_scopes_open_their_routes_and_nothing_else(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    agent = make_agent(app, user)
    read = bearer(mint(client, headers, scopes=["read"])["key"])
    write = bearer(mint(client, headers, scopes=["write"])["key"])
    deploy = mint(client, headers, scopes=["deploy"])["key"]
    assert client.get("/v1/agents", headers=read).get_json()["total"] == 1
    refused = assert_error(
        client.post("/v1/agents", headers=read, json={"name": "x", "image": "a:1"}), 403, "forbidden"
    )
    assert "'write'" in refused["message"]
    created = client.post("/v1/agents", headers=write, json={"name": "by-ci", "image": "deploy-test/http-agent:1"})
    assert created.status_code == 201 and created.get_json()["owner_id"] == user.id
    assert_error(client.get("/v1/agents", headers=write), 403, "forbidden")
    assert_error(client.post(f"/v1/agents/{agent['id']}/deploy", headers=write, json={}), 403, "forbidden")
    # `deploy` as X-API-Key works the same as Bearer.
    deployed = client.post(f"/v1/agents/{agent['id']}/deploy", headers={"X-API-Key": deploy}, json={})
    assert deployed.status_code == 202, deployed.get_json()
    assert deployed.get_json()["owner_id"] == user.id


@pytest.mark.parametrize(
    "route",
    [
        ("POST", "/v1/auth/api-keys"),
        ("GET", "/v1/auth/api-keys"),
        ("POST", "/v1/auth/logout"),
        ("POST", "/v1/auth/refresh"),
        ("GET", "/v1/users"),
    ],
)
def test_a_token_never_mints_lists_refreshes_logs_out_or_reaches_admin_routes(
    client: FlaskClient, auth: AuthActions, route: tuple[str, str]
) -> None:
    _, headers = auth.admin()
    token = mint(client, headers, scopes=["read", "write", "deploy"])["key"]
    method, path = route
    body = {"name": "more"} if path == "/v1/auth/api-keys" and method == "POST" else None
    for sent in (bearer(token), {"X-API-Key": token}):
        assert_error(client.open(path, method=method, headers=sent, json=body), 403, "forbidden")
    assert client.get("/v1/auth/api-keys", headers=headers).get_json()["total"] == 1  # nothing was minted


def test_scopes_are_capped_by_the_role(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    """A `user` may give a token `read` only; a developer's `write` token stops writing once it is demoted."""
    reader, reader_headers = auth.user(role="user")
    refused = assert_error(
        client.post("/v1/auth/api-keys", headers=reader_headers, json={"name": "x", "scopes": ["write"]}),
        403,
        "forbidden",
    )
    assert refused["details"] == {"scopes": ["read"]}
    assert mint(client, reader_headers)["scopes"] == ["read"]
    developer, developer_headers = auth.user()
    write = bearer(mint(client, developer_headers, scopes=["read", "write"])["key"])
    body = {"name": "before", "image": "deploy-test/http-agent:1"}
    assert client.post("/v1/agents", headers=write, json=body).status_code == 201
    _, admin = auth.admin()
    assert client.patch(f"/v1/users/{developer.id}", headers=admin, json={"role": "user"}).status_code == 200
    refused = assert_error(client.post("/v1/agents", headers=write, json={**body, "name": "after"}), 403, "forbidden")
    assert "role (user)" in refused["message"]
    assert client.get("/v1/agents", headers=write).get_json()["total"] == 1  # reading still works


def test_a_revoked_expired_or_deactivated_token_is_401_on_every_worker(
    client: FlaskClient, auth: AuthActions, app: Flask, make_app: Callable[..., Flask]
) -> None:
    user, headers = auth.user()
    other_worker = make_app().test_client()
    first = mint(client, headers)
    for worker in (client, other_worker):
        assert worker.get("/v1/agents", headers=bearer(first["key"])).status_code == 200
    assert client.delete(f"/v1/auth/api-keys/{first['id']}", headers=headers).status_code == 200
    for worker in (client, other_worker):
        assert_error(worker.get("/v1/agents", headers=bearer(first["key"])), 401, "unauthorized")
        assert_error(worker.get("/v1/agents", headers={"X-API-Key": first["key"]}), 401, "unauthorized")
    expiring = mint(client, headers)
    with app.app_context():
        row = db.session.get(PersonalToken, expiring["id"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert_error(other_worker.get("/v1/agents", headers=bearer(expiring["key"])), 401, "unauthorized")
    live = mint(client, headers)
    assert other_worker.get("/v1/agents", headers=bearer(live["key"])).status_code == 200
    _, admin = auth.admin()
    assert client.patch(f"/v1/users/{user.id}", headers=admin, json={"is_active": False}).status_code == 200
    assert_error(other_worker.get("/v1/agents", headers=bearer(live["key"])), 401, "unauthorized")


@pytest.mark.parametrize(
    "presented",
    ["dsp_", "dsp_" + "0" * 36, PERSONAL_TOKEN_PREFIX + "x" * 10, "dsk_" + "0" * 36],
    ids=["empty", "bad_checksum", "short", "agent_key_shape"],
)
def test_a_malformed_token_is_401(client: FlaskClient, presented: str) -> None:
    assert_error(client.get("/v1/agents", headers=bearer(presented)), 401, "unauthorized")


def test_last_used_at_is_written_at_most_once_per_resolution(
    client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(API_KEY_LAST_USED_RESOLUTION_SECONDS=60.0)
    clock = Clock()
    monkeypatch.setattr(personal_tokens, "utcnow", clock)
    _, headers = auth.user()
    created = mint(client, headers)

    def use() -> datetime:
        assert client.get("/v1/agents", headers=bearer(created["key"])).status_code == 200
        [listed] = client.get("/v1/auth/api-keys", headers=headers).get_json()["items"]
        return datetime.fromisoformat(listed["last_used_at"])

    first = clock()
    assert use() == first
    clock.advance(59.9)
    assert use() == first  # within the resolution: no write
    clock.advance(0.1)
    assert use() == first + timedelta(seconds=60)


def test_the_rate_limiter_buckets_by_token(
    client: FlaskClient, auth: AuthActions, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each token counts in a bucket of its own (`token:<id>`), not its user's; a made-up one in the address's."""
    monkeypatch.setattr(limiter, "enabled", limiter.enabled)  # the shared app stays unlimited afterwards
    limited_app = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_PER_MINUTE=3, AUTH_RATE_LIMIT_PER_MINUTE=1000)
    limiter.reset()
    try:
        limited = limited_app.test_client()
        _, headers = auth.user()
        one, two = mint(client, headers)["key"], mint(client, headers)["key"]
        for _ in range(3):
            assert limited.get("/v1/agents", headers=bearer(one)).status_code == 200
        assert_error(limited.get("/v1/agents", headers=bearer(one)), 429, "rate_limited")
        assert limited.get("/v1/agents", headers={"X-API-Key": two}).status_code == 200  # a bucket of its own
        assert limited.get("/v1/agents", headers=headers).status_code == 200  # and not the user's
        made_up = PERSONAL_TOKEN_PREFIX + "0" * 36
        for _ in range(3):
            assert_error(limited.get("/v1/agents", headers=bearer(made_up)), 401, "unauthorized")
        assert_error(limited.get("/v1/agents", headers=bearer(made_up)), 429, "rate_limited")  # the address's
    finally:
        limiter.reset()
        with limited_app.app_context():
            db.engine.dispose()


def test_tokens_are_found_by_their_hash_only(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.user()
    created = mint(client, headers)
    with app.app_context():
        stored = db.session.scalars(select(PersonalToken.key_hash)).all()
        assert stored == [api_key_hash(created["key"])]
