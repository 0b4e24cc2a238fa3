"""CORS follows ALLOWED_ORIGINS, and never pairs `*` with credentials."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient


def test_allowed_origin_gets_cors_headers(client: FlaskClient) -> None:
    response = client.options(
        "/v1/auth/login",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


def test_other_origins_get_nothing(client: FlaskClient) -> None:
    response = client.get("/v1/auth/me", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_wildcard_never_allows_credentials(make_app: Any) -> None:
    app = make_app(ALLOWED_ORIGINS=["*"])
    response = app.test_client().get("/v1/auth/me", headers={"Origin": "https://anywhere.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_no_origins_configured_means_no_cors(make_app: Any) -> None:
    app = make_app(ALLOWED_ORIGINS=[])
    response = app.test_client().get("/v1/auth/me", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers
