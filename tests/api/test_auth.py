"""Registration, login, refresh, logout and token checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import AuthSession, User
from deploy_service.settings import Settings, settings_for
from tests.factories import PASSWORD, AuthActions, make_user
from tests.helpers import assert_error


def register(client: FlaskClient, email: str, password: str = PASSWORD, **extra: Any) -> Any:
    return client.post("/v1/auth/register", json={"email": email, "password": password, **extra})


def test_first_user_is_admin_then_users(client: FlaskClient) -> None:
    first = register(client, "Boss@Example.com", full_name="The Boss")
    assert first.status_code == 201
    body = first.get_json()
    assert body["role"] == "admin"
    assert body["email"] == "boss@example.com"
    assert body["full_name"] == "The Boss"
    assert set(body) == {"id", "email", "full_name", "role", "created_at"}
    second = register(client, "someone@example.com")
    assert second.status_code == 201
    assert second.get_json()["role"] == "developer"


def test_password_is_stored_as_a_slow_hash(client: FlaskClient, app: Flask) -> None:
    register(client, "hash@example.com")
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "hash@example.com"))
        assert user is not None
        assert user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash


def test_duplicate_email_is_409_case_insensitive(client: FlaskClient) -> None:
    assert register(client, "dup@example.com").status_code == 201
    assert_error(register(client, "DUP@example.com"), 409, "conflict")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"password": PASSWORD}, "email"),
        ({"email": "a@example.com", "password": PASSWORD, "role": "admin"}, "role"),
        ({"email": "a@example.com", "password": 12345678}, "password"),
    ],
)
def test_register_validation(client: FlaskClient, payload: dict[str, Any], field: str) -> None:
    error = assert_error(client.post("/v1/auth/register", json=payload), 400, "validation_error")
    assert field in error["details"]


def test_registration_can_be_disabled(client: FlaskClient, configure: Callable[..., Settings]) -> None:
    configure(REGISTRATION_ENABLED=False)
    assert_error(register(client, "closed@example.com"), 403, "forbidden")


def test_login_rehashes_a_password_hashed_with_other_parameters(
    client: FlaskClient, app: Flask, auth: AuthActions
) -> None:
    user = make_user(app)
    configured = settings_for(app).auth
    older = PasswordHasher(
        time_cost=configured.password_time_cost + 1, memory_cost=configured.password_memory_kib * 2, parallelism=1
    ).hash(PASSWORD)

    def stored_hash() -> str:
        with app.app_context():
            found = db.session.get(User, user.id)
            assert found is not None
            return found.password_hash

    with app.app_context():
        found = db.session.get(User, user.id)
        assert found is not None
        found.password_hash = older
        db.session.commit()
    auth.login(user)
    rehashed = stored_hash()
    assert rehashed != older
    parameters = extract_parameters(rehashed)
    assert (parameters.time_cost, parameters.memory_cost) == (
        configured.password_time_cost,
        configured.password_memory_kib,
    )
    auth.login(user)  # the new hash verifies the same password
    assert stored_hash() == rehashed  # and a current hash is left as it is
    assert_error(
        client.post("/v1/auth/login", json={"email": user.email, "password": "wrong-password"}), 401, "unauthorized"
    )


def test_login_returns_tokens(client: FlaskClient, app: Flask) -> None:
    user = make_user(app)
    response = client.post("/v1/auth/login", json={"email": user.email.upper(), "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == int(app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    assert body["access_token"] and body["refresh_token"]
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.get_json()["id"] == user.id
    assert "password_hash" not in me.get_data(as_text=True)


def test_bad_credentials_are_401_with_one_message(client: FlaskClient, app: Flask) -> None:
    user = make_user(app)
    wrong = assert_error(
        client.post("/v1/auth/login", json={"email": user.email, "password": "wrong-pass"}), 401, "unauthorized"
    )
    unknown = assert_error(
        client.post("/v1/auth/login", json={"email": "ghost@example.com", "password": PASSWORD}), 401, "unauthorized"
    )
    assert wrong["message"] == unknown["message"]


def test_me_requires_a_token(client: FlaskClient) -> None:
    assert_error(client.get("/v1/auth/me"), 401, "unauthorized")
    assert_error(client.get("/v1/auth/me", headers={"Authorization": "Bearer not.a.jwt"}), 401, "unauthorized")
    assert_error(client.get("/v1/auth/me", headers={"Authorization": "Basic abc"}), 401, "unauthorized")


def test_refresh_gives_a_working_access_token(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user = make_user(app)
    tokens = auth.login(user)
    response = client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    assert response.status_code == 200
    body = response.get_json()
    assert "refresh_token" not in body
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}).status_code == 200


def test_token_types_are_not_interchangeable(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    tokens = auth.login(make_user(app))
    assert_error(
        client.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}), 401, "unauthorized"
    )
    assert_error(
        client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {tokens['access_token']}"}),
        401,
        "unauthorized",
    )


def test_logout_revokes_access_and_refresh_tokens(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user = make_user(app)
    tokens = auth.login(user)
    other_session = auth.login(user)
    access = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.post("/v1/auth/logout", headers=access).status_code == 200
    assert_error(client.get("/v1/auth/me", headers=access), 401, "unauthorized")
    assert_error(
        client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}),
        401,
        "unauthorized",
    )
    # Another login of the same user is a separate session and keeps working.
    assert (
        client.get("/v1/auth/me", headers={"Authorization": f"Bearer {other_session['access_token']}"}).status_code
        == 200
    )


def test_logout_holds_in_another_process(auth: AuthActions, app: Flask, make_app: Any) -> None:
    """A second app on the same database stands for another gunicorn worker."""
    tokens = auth.login(make_user(app))
    access = {"Authorization": f"Bearer {tokens['access_token']}"}
    other_worker = make_app().test_client()
    assert other_worker.get("/v1/auth/me", headers=access).status_code == 200
    assert auth.client.post("/v1/auth/logout", headers=access).status_code == 200
    assert_error(other_worker.get("/v1/auth/me", headers=access), 401, "unauthorized")


def _session_id(app: Flask, user_id: str) -> str:
    with app.app_context():
        return db.session.scalars(select(AuthSession.id).where(AuthSession.user_id == user_id)).one()


def test_expired_token_is_401(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user = make_user(app)
    auth.login(user)
    with app.app_context():
        token = create_access_token(
            identity=user.id, additional_claims={"sid": _session_id(app, user.id)}, expires_delta=timedelta(seconds=-5)
        )
    body = assert_error(client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}), 401, "unauthorized")
    assert "expired" in body["message"]


def test_deleted_user_token_is_401(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user = make_user(app)
    headers = auth.headers(user)
    with app.app_context():
        db.session.delete(db.session.get(User, user.id))
        db.session.commit()
    assert_error(client.get("/v1/auth/me", headers=headers), 401, "unauthorized")


def test_deactivated_user_cannot_log_in_or_use_tokens(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user = make_user(app)
    headers = auth.headers(user)
    with app.app_context():
        db.session.get(User, user.id).is_active = False
        db.session.commit()
    assert_error(client.get("/v1/auth/me", headers=headers), 401, "unauthorized")
    assert_error(client.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD}), 401, "unauthorized")
