"""Every failure has the contract's error body, whatever produced it."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import User
from tests.factories import AuthActions
from tests.helpers import assert_error


def test_unknown_route_is_404(client: FlaskClient) -> None:
    assert_error(client.get("/v1/nope"), 404, "not_found")
    assert_error(client.post("/nope", json={}), 404, "not_found")


def test_wrong_method_is_405_with_allow_header(client: FlaskClient) -> None:
    response = client.delete("/v1/auth/login")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_body_over_the_limit_is_413(client: FlaskClient, app: Flask) -> None:
    big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    response = client.post("/v1/auth/register", data=big, content_type="application/json")
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "body",
    ["{bad json", '{"email": "a@b.co",}', "\xff\xfe"],
)
def test_malformed_json_is_400(client: FlaskClient, body: str) -> None:
    response = client.post("/v1/auth/register", data=body, content_type="application/json")
    error = assert_error(response, 400, "validation_error")
    assert "json" in error["details"]


@pytest.mark.parametrize("body", [[], "a string", 42, None])
def test_json_that_is_not_an_object_is_400(client: FlaskClient, body: Any) -> None:
    import json

    response = client.post("/v1/auth/register", data=json.dumps(body), content_type="application/json")
    assert_error(response, 400, "validation_error")


def test_unknown_and_missing_fields_are_named(client: FlaskClient) -> None:
    response = client.post("/v1/auth/register", json={"email": "a@example.com", "role": "admin"})
    error = assert_error(response, 400, "validation_error")
    assert set(error["details"]) == {"role", "password"}
    assert error["details"]["role"] == ["Unknown field."]
    assert "role" in error["message"] and "password" in error["message"]


def test_bad_query_argument_is_400(client: FlaskClient, auth: AuthActions) -> None:
    _, headers = auth.user()
    error = assert_error(client.get("/v1/agents?skip=-1", headers=headers), 400, "validation_error")
    assert "skip" in error["details"]
    assert_error(client.get("/v1/agents?limit=abc", headers=headers), 400, "validation_error")


def test_unexpected_exception_is_500_without_stack_trace_and_rolls_back(make_app: Any) -> None:
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/boom")
    def boom() -> Any:
        db.session.add(User(email="half@written.io", password_hash="x", role="user"))
        db.session.flush()
        raise RuntimeError("secret internals /etc/passwd")

    response = app.test_client().post("/boom")
    body = assert_error(response, 500, "internal_error")
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "secret internals" not in text
    assert set(body) == {"success", "error", "message"}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User).where(User.email == "half@written.io")) == 0
