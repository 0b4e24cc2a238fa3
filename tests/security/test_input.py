"""Input attacks: mass assignment, oversized bodies, page sizes, and cross-origin requests.

Every route that takes a JSON body loads it with a strict marshmallow schema: a field the client may
not set — a server-set one (`id`, `owner_id`, `status`, `created_at`...) or one the service never
takes (`privileged`, `container_id`...) — is a 400 `validation_error` naming that field, and nothing is
written. Routes that take no body (actions such as stop or acknowledge, and deletes) read nothing from
one, so nothing in it can be assigned; that is shown here too.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import User
from tests.helpers import assert_error
from tests.security.conftest import World
from tests.security.routes import PROBES, USER, USER_OR_KEY, Probe

AGENT = {"name": "sneaky", "image": "deploy-test/http-agent:latest"}
EVALUATION = {"prompt": "p", "response": "r", "agent_id": "{agent_id}"}

# (method, path, a valid body, the field smuggled in, its value)
MASS_ASSIGNMENT: list[tuple[str, str, dict[str, Any], str, Any]] = [
    *[
        ("POST", "/v1/auth/register", {"email": "new@example.com", "password": "long-enough-pw"}, field, value)
        for field, value in [
            ("role", "admin"),
            ("is_admin", True),
            ("id", "00000000-0000-0000-0000-000000000001"),
            ("created_at", "2020-01-01T00:00:00Z"),
            ("password_hash", "$argon2id$forged"),
            ("is_active", True),
        ]
    ],
    ("POST", "/v1/auth/login", {"email": "x@example.com", "password": "long-enough-pw"}, "role", "admin"),
    *[
        ("POST", "/v1/agents", AGENT, field, value)
        for field, value in [
            ("owner_id", "{stranger_id}"),
            ("status", "deployed"),
            ("id", "00000000-0000-0000-0000-000000000002"),
            ("created_at", "2020-01-01T00:00:00Z"),
            ("updated_at", "2020-01-01T00:00:00Z"),
            ("privileged", True),
            ("container_id", "abc123"),
            ("network_mode", "host"),
            ("volumes", ["/:/host"]),
            ("cap_add", ["SYS_ADMIN"]),
            ("user", "root"),
        ]
    ],
    *[
        ("PATCH", "/v1/agents/{agent_id}", {"description": "d"}, field, value)
        for field, value in [
            ("owner_id", "{stranger_id}"),
            ("status", "idle"),
            ("id", "00000000-0000-0000-0000-000000000003"),
            ("privileged", True),
            ("created_at", "2020-01-01T00:00:00Z"),
        ]
    ],
    *[
        (method, path, body, field, value)
        for method, path, body in [
            ("POST", "/v1/deployments", {"agent_id": "{agent_id}"}),
            ("POST", "/v1/agents/deploy", {"agent_id": "{agent_id}"}),
            ("POST", "/v1/agents/{agent_id}/deploy", {}),
        ]
        for field, value in [
            ("status", "ready"),
            ("desired_state", "deleted"),
            ("owner_id", "{stranger_id}"),
            ("container_id", "abc123"),
            ("privileged", True),
            ("image", "evil/image:latest"),
            ("config", {"privileged": True}),
            ("instances", []),
            ("revision", 99),
        ]
        # `image` is a field of `POST /v1/deployments` (a deploy straight from an image): beside `agent_id` it is
        # refused as one of the three things to deploy (tests/api/test_deploy_from_source.py).
        if (path, field) != ("/v1/deployments", "image")
    ],
    *[
        ("POST", "/v1/deployments/{deployment_id}/scale", {"replicas": 2}, field, value)
        for field, value in [("status", "running"), ("desired_state", "stopped"), ("replicas_desired", 40)]
    ],
    *[
        ("POST", "/v1/deployments/{deployment_id}/results", {"results": "r"}, field, value)
        for field, value in [("id", "x"), ("created_by", "key:forged"), ("deployment_id", "{deployment_id}")]
    ],
    *[
        ("POST", "/v1/secrets", {"name": "n", "value": "v"}, field, value)
        for field, value in [("id", "x"), ("owner_id", "{stranger_id}"), ("ciphertext", "x"), ("created_at", "x")]
    ],
    *[
        ("POST", "/v1/agents/{agent_id}/api-key", {}, field, value)
        for field, value in [
            ("key", "dsk_chosen"),
            ("key_hash", "0" * 64),
            ("agent_id", "{agent_id}"),
            ("owner_id", "{stranger_id}"),
            ("revoked_at", None),
            ("prefix", "dsk_"),
            ("last_used_at", None),
        ]
    ],
    *[
        ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook"}, field, value)
        for field, value in [("secret", "whsec_chosen"), ("owner_id", "{stranger_id}"), ("id", "x")]
    ],
    *[
        ("POST", "/v1/evaluations", EVALUATION, field, value)
        for field, value in [("id", "x"), ("deployment_id", "{deployment_id}"), ("created_at", "x")]
    ],
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], value)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _users(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(User)) or 0


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "value"),
    MASS_ASSIGNMENT,
    ids=[f"{m} {p} +{f}" for m, p, _, f, _ in MASS_ASSIGNMENT],
)
def test_a_field_the_client_may_not_set_is_400_naming_it(
    world: World, method: str, path: str, body: dict[str, Any], field: str, value: Any
) -> None:
    ids = {**world.victim.ids, "stranger_id": world.stranger.id}
    before, users = world.victim.snapshot(), _users(world.app)
    response = world.client.open(
        _fill(path, ids),
        method=method,
        headers=world.victim.headers,
        json={**_fill(body, ids), field: _fill(value, ids)},
    )
    error = assert_error(response, 400, "validation_error")
    assert error["details"][field] == ["Unknown field."], error
    assert world.victim.snapshot() == before and _users(world.app) == users


def test_the_same_bodies_without_the_smuggled_field_are_accepted(world: World) -> None:
    """The control: each base body is valid, so the 400s above are caused by the smuggled field alone."""
    ids = {**world.victim.ids, "stranger_id": world.stranger.id}
    seen: set[tuple[str, str]] = set()
    for method, path, body, _, _ in MASS_ASSIGNMENT:
        if (method, path) in seen or path == "/v1/auth/login":
            continue
        seen.add((method, path))
        if path == "/v1/deployments/{deployment_id}/scale":
            continue  # accepted by the schema; the deploying deployment then answers invalid_state
        response = world.client.open(
            _fill(path, ids), method=method, headers=world.victim.headers, json=_fill(body, ids)
        )
        assert response.status_code < 400 or response.get_json()["error"] in ("conflict",), (path, response.get_json())


@pytest.mark.parametrize("nested", ["resources", "health_check", "source"])
def test_unknown_nested_fields_are_400_naming_the_path(world: World, nested: str) -> None:
    body = {
        "resources": {**AGENT, "resources": {"cpu": 0.5, "privileged": True}},
        "health_check": {**AGENT, "health_check": {"path": "/health", "command": ["sh"]}},
        "source": {"name": "s", "source": {"git_url": "https://example.com/r.git", "token": "x"}},
    }[nested]
    response = world.client.post("/v1/agents", headers=world.victim.headers, json=body)
    error = assert_error(response, 400, "validation_error")
    assert list(error["details"][nested].values()) == [["Unknown field."]], error


def test_a_body_on_a_route_that_takes_none_assigns_nothing(world: World) -> None:
    victim, headers = world.victim, world.victim.headers
    alert = f"/v1/alerts/{victim.ids['alert_id']}/acknowledge"
    acknowledged = world.client.post(alert, headers=headers, json={"status": "resolved", "owner_id": world.stranger.id})
    assert acknowledged.status_code == 200 and acknowledged.get_json()["status"] == "acknowledged"
    deployment = f"/v1/deployments/{victim.ids['deployment_id']}"
    stopped = world.client.post(deployment + "/stop", headers=headers, json={"status": "running", "replicas": 9})
    assert stopped.status_code == 202 and stopped.get_json()["status"] in ("deploying", "stopped")
    assert stopped.get_json()["desired_state"] == "stopped" and stopped.get_json()["owner_id"] == victim.user.id


# Oversized bodies --------------------------------------------------------------------------------------

OVERSIZED = [
    ("POST", "/v1/auth/register", "user"),
    ("POST", "/v1/auth/login", "user"),
    ("POST", "/v1/agents", "user"),
    ("PATCH", "/v1/agents/{agent_id}", "user"),
    ("POST", "/v1/secrets", "user"),
    ("POST", "/v1/webhooks", "user"),
    ("POST", "/v1/deployments", "user"),
    ("POST", "/v1/agents/{agent_id}/interact", "key"),
    ("POST", "/v1/deployments/{deployment_id}/results", "key"),
    ("POST", "/v1/evaluations", "key"),
]


def _big_json(app: Flask) -> bytes:
    limit: int = app.config["MAX_CONTENT_LENGTH"]
    return b'{"name": "' + b"x" * limit + b'"}'


@pytest.mark.parametrize(("method", "path", "who"), OVERSIZED, ids=[f"{m} {p}" for m, p, _ in OVERSIZED])
def test_a_body_over_the_limit_is_413_and_writes_nothing(world: World, method: str, path: str, who: str) -> None:
    victim = world.victim
    headers = victim.headers if who == "user" else {"X-API-Key": victim.keys[victim.ids["agent_id"]]}
    before, users = victim.snapshot(), _users(world.app)
    url = _fill(path, victim.ids)
    response = world.client.open(
        url, method=method, headers=headers, data=_big_json(world.app), content_type="application/json"
    )
    assert_error(response, 413, "payload_too_large")
    assert victim.snapshot() == before and _users(world.app) == users


def _chunked_post(world: World, url: str, body: bytes) -> Any:
    """POST without Content-Length (chunked transfer, as gunicorn hands it to the app)."""
    return world.client.post(
        url,
        headers={**world.victim.headers, "Transfer-Encoding": "chunked"},
        input_stream=io.BytesIO(body),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("shape", ["oversized", "valid_prefix_then_padding"])
def test_a_chunked_body_over_the_limit_is_413_too(world: World, shape: str) -> None:
    """Werkzeug alone would cut a streamed body at the limit: a 400, or a valid prefix quietly accepted."""
    limit: int = world.app.config["MAX_CONTENT_LENGTH"]
    body = {
        "oversized": _big_json(world.app),
        "valid_prefix_then_padding": b'{"name": "padded", "value": "v"}' + b" " * limit,
    }[shape]
    assert_error(_chunked_post(world, "/v1/secrets", body), 413, "payload_too_large")
    assert world.client.get("/v1/secrets", headers=world.victim.headers).get_json()["total"] == 1


def test_a_chunked_body_under_the_limit_is_read_whole(world: World) -> None:
    limit: int = world.app.config["MAX_CONTENT_LENGTH"]
    body = b'{"name": "streamed", "value": "v"}' + b" " * (limit - 100)
    created = _chunked_post(world, "/v1/secrets", body)
    assert created.status_code == 201, created.get_json()


# Page sizes ------------------------------------------------------------------------------------------


def _paged_probes(client: FlaskClient) -> list[Probe]:
    spec = client.get("/openapi.json").get_json()
    paged = []
    for probe in PROBES:
        if probe.method != "GET" or probe.query or probe.access not in (USER, USER_OR_KEY):
            continue
        operation = spec["paths"][re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", probe.rule)]["get"]
        if any(p["name"] == "limit" and p["in"] == "query" for p in operation.get("parameters", [])):
            paged.append(probe)
    return paged


def test_every_list_route_is_paged(client: FlaskClient) -> None:
    paths = {probe.rule for probe in _paged_probes(client)}
    assert {"/v1/agents", "/v1/deployments", "/v1/secrets", "/v1/alerts", "/v1/evaluations"} <= paths
    assert "/v1/deployments/<string:deployment_id>/events" in paths and len(paths) >= 12


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("limit=100000", 200, None),
        ("limit=201", 200, None),
        ("skip=-1", 400, "skip"),
        ("limit=-5", 400, "limit"),
        ("limit=0", 400, "limit"),
        ("limit=abc", 400, "limit"),
        ("skip=1.5", 400, "skip"),
        ("limit=1e9", 400, "limit"),
        ("skip=2147483648", 400, "skip"),
        ("skip=99999999999999999999999", 400, "skip"),
        ("offset=10", 400, "offset"),
    ],
)
def test_page_size_is_clamped_and_bad_paging_is_400_on_every_list_route(
    world: World, query: str, status: int, field: str | None
) -> None:
    for probe in _paged_probes(world.client):
        url, _ = probe.render(world.victim.ids)
        response = world.client.get(f"{url}?{query}", headers=world.victim.headers)
        if status == 200:
            assert response.status_code == 200, (url, response.get_json())
            assert response.get_json()["limit"] == 200, url
        else:
            error = assert_error(response, 400, "validation_error")
            assert field in error["details"], (url, error)


def test_the_largest_skip_the_spec_allows_is_an_empty_page(world: World) -> None:
    for probe in _paged_probes(world.client):
        url, _ = probe.render(world.victim.ids)
        response = world.client.get(f"{url}?skip=2147483647", headers=world.victim.headers)
        assert response.status_code == 200, (url, response.get_json())
        assert response.get_json()["items"] == [] and response.get_json()["skip"] == 2147483647, url


def test_every_route_with_query_arguments_refuses_unknown_ones(world: World) -> None:
    """Query arguments are strict like bodies: a misspelt filter is a 400, never silently ignored."""
    spec = world.client.get("/openapi.json").get_json()
    checked = []
    for probe in PROBES:
        if probe.method != "GET" or probe.query or probe.access not in (USER, USER_OR_KEY):
            continue
        operation = spec["paths"][re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", probe.rule)]["get"]
        if not any(p["in"] == "query" for p in operation.get("parameters", [])):
            continue
        url, _ = probe.render(world.victim.ids)
        error = assert_error(
            world.client.get(f"{url}?colour=blue", headers=world.victim.headers), 400, "validation_error"
        )
        assert error["details"] == {"colour": ["Unknown field."]}, (url, error)
        checked.append(probe.rule)
    assert {"/v1/agents", "/v1/deployments/<string:deployment_id>/logs", "/v1/evaluations/stats"} <= set(checked)
    assert "/v1/agents/<string:agent_id>/stats" in checked and len(checked) >= 15


# CORS ------------------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com"
DISALLOWED = [
    "https://evil.example.net",
    "null",
    "https://app.example.com.evil.net",
    "http://app.example.com",
    "https://app.example.com:8443",
    "https://sub.app.example.com",
]
CORS_ROUTES = [("GET", "/v1/agents"), ("POST", "/v1/auth/login"), ("DELETE", "/v1/agents/{agent_id}")]


@pytest.mark.parametrize(("method", "path"), CORS_ROUTES)
def test_an_allowed_origin_gets_cors_headers(world: World, method: str, path: str) -> None:
    url = _fill(path, world.victim.ids)
    preflight = world.client.options(url, headers={"Origin": ALLOWED, "Access-Control-Request-Method": method})
    assert preflight.headers.get("Access-Control-Allow-Origin") == ALLOWED
    assert preflight.headers.get("Access-Control-Allow-Credentials") == "true"
    assert method in preflight.headers.get("Access-Control-Allow-Methods", "")
    simple = world.client.get("/v1/auth/me", headers={"Origin": ALLOWED})
    assert simple.headers.get("Access-Control-Allow-Origin") == ALLOWED


@pytest.mark.parametrize("origin", DISALLOWED)
@pytest.mark.parametrize(("method", "path"), CORS_ROUTES)
def test_a_disallowed_origin_gets_no_cors_headers(world: World, origin: str, method: str, path: str) -> None:
    url = _fill(path, world.victim.ids)
    preflight = world.client.options(url, headers={"Origin": origin, "Access-Control-Request-Method": method})
    simple = world.client.open(url, method=method, headers={**world.victim.headers, "Origin": origin}, json={})
    for response in (preflight, simple):
        assert "Access-Control-Allow-Origin" not in response.headers, (origin, dict(response.headers))
        assert "Access-Control-Allow-Credentials" not in response.headers
