"""Secrets: encrypted at rest, listed by name only, never shown again."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import Secret
from deploy_service.security import decrypt_secret
from deploy_service.services.secrets import resolve_secret_values
from tests.factories import AuthActions, make_agent, make_secret, make_user
from tests.helpers import assert_error

VALUE = "sk-live-9f8e7d6c5b4a"


def test_create_and_list_never_show_the_value(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    _, headers = auth.user()
    created = client.post("/v1/secrets", headers=headers, json={"name": "openai-key", "value": VALUE})
    assert created.status_code == 201
    body = created.get_json()
    assert set(body) == {"id", "name", "created_at", "updated_at"}
    assert body["name"] == "openai-key"
    listing = client.get("/v1/secrets", headers=headers)
    assert listing.get_json()["items"] == [body]
    for response in (created, listing):
        assert VALUE not in response.get_data(as_text=True)


def test_values_are_encrypted_at_rest(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    _, headers = auth.user()
    client.post("/v1/secrets", headers=headers, json={"name": "db-pass", "value": VALUE})
    with app.app_context():
        secret = db.session.scalar(select(Secret).where(Secret.name == "db-pass"))
        assert secret is not None
        assert VALUE.encode() not in secret.ciphertext
        assert decrypt_secret(secret.ciphertext) == VALUE


def test_value_is_never_logged(client: FlaskClient, auth: AuthActions, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    _, headers = auth.user()
    client.post("/v1/secrets", headers=headers, json={"name": "logged", "value": VALUE})
    client.post("/v1/secrets", headers=headers, json={"name": "logged", "value": VALUE})
    client.post("/v1/secrets", headers=headers, json={"name": "bad name!", "value": VALUE})
    assert VALUE not in caplog.text


def test_duplicate_name_is_409_per_owner(client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.user()
    _, other = auth.user()
    assert client.post("/v1/secrets", headers=headers, json={"name": "k", "value": "1"}).status_code == 201
    assert_error(client.post("/v1/secrets", headers=headers, json={"name": "k", "value": "2"}), 409, "conflict")
    assert client.post("/v1/secrets", headers=other, json={"name": "k", "value": "3"}).status_code == 201


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "k"}, "value"),
        ({"value": "v"}, "name"),
        ({"name": "k", "value": ""}, "value"),
        ({"name": "-k", "value": "v"}, "name"),
        ({"name": "a b", "value": "v"}, "name"),
        ({"name": "k", "value": "v", "owner_id": "x"}, "owner_id"),
        ({"name": "k", "value": "x" * (64 * 1024 + 1)}, "value"),
    ],
)
def test_secret_validation(client: FlaskClient, auth: AuthActions, payload: dict[str, str], field: str) -> None:
    _, headers = auth.user()
    error = assert_error(client.post("/v1/secrets", headers=headers, json=payload), 400, "validation_error")
    assert field in error["details"]


def test_delete_and_scoping(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    owner = make_user(app)
    theirs = make_secret(app, owner, "theirs")
    _, headers = auth.user()
    assert client.get("/v1/secrets", headers=headers).get_json()["total"] == 0
    assert_error(client.delete(f"/v1/secrets/{theirs['id']}", headers=headers), 404, "not_found")
    owner_headers = auth.headers(owner)
    assert client.delete(f"/v1/secrets/{theirs['id']}", headers=owner_headers).status_code == 204
    assert_error(client.delete(f"/v1/secrets/{theirs['id']}", headers=owner_headers), 404, "not_found")


def test_referenced_secret_cannot_be_deleted(client: FlaskClient, auth: AuthActions, app: Flask) -> None:
    user, headers = auth.user()
    secret = make_secret(app, user, "token")
    agent = make_agent(app, user, secrets={"TOKEN": "token"})
    error = assert_error(client.delete(f"/v1/secrets/{secret['id']}", headers=headers), 409, "conflict")
    assert error["details"]["agent_ids"] == [agent["id"]]
    client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"secrets": {}})
    assert client.delete(f"/v1/secrets/{secret['id']}", headers=headers).status_code == 204


def test_secrets_resolve_for_container_start(app: Flask) -> None:
    user = make_user(app)
    make_secret(app, user, "a", "value-a")
    make_secret(app, user, "b", "value-b")
    with app.app_context():
        assert resolve_secret_values(user.id, {"A": "a", "B": "b", "C": "a"}) == {
            "A": "value-a",
            "B": "value-b",
            "C": "value-a",
        }


def test_encryption_keys_can_be_rotated(make_app: object) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old_app = make_app(SECRETS_ENCRYPTION_KEYS=[old_key])  # type: ignore[operator]
    user = make_user(old_app)
    make_secret(old_app, user, "rotated", "keep-me")
    rotated_app = make_app(SECRETS_ENCRYPTION_KEYS=[new_key, old_key])  # type: ignore[operator]
    with rotated_app.app_context():
        assert resolve_secret_values(user.id, {"X": "rotated"}) == {"X": "keep-me"}
    other_app = make_app(SECRETS_ENCRYPTION_KEYS=[new_key])  # type: ignore[operator]
    with other_app.app_context(), pytest.raises(Exception, match="cannot be decrypted"):
        resolve_secret_values(user.id, {"X": "rotated"})
