"""The OpenAPI spec's shape: what frontend teams and client generators rely on, route by route.

tests/clients generates real clients from the spec; these tests state the rules behind it, one each,
so a new route that breaks one fails here with its name: a unique camelCase `operationId`, a tag, a
summary and a description; every error status documented with the one `Error` body; the statuses
the layers in front of every view answer (401/403 with credentials, 429 under `/v1`, 413 with a
body, 500); a security requirement matching what the route accepts; one named schema per enum.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.models import AgentStatus, AlertSeverity, DeploymentStatus, DesiredState
from deploy_service.permissions import PERMISSIONS

METHODS = ("get", "post", "put", "patch", "delete")
ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/openapi.json").get_json()
    return body


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _response(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    ref = response.get("$ref")
    if ref:
        resolved: dict[str, Any] = spec["components"]["responses"][ref.rsplit("/", 1)[-1]]
        return resolved
    return response


def _walk(node: Any, *, skip: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key not in skip:
                yield from _walk(value, skip=skip)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, skip=skip)


# Validation-only subschemas (cross-field rules that generators ignore) describe no data shape.
RULES_ONLY = ("not", "if", "then", "else")


def test_every_operation_has_a_unique_camel_case_operation_id(spec: dict[str, Any]) -> None:
    ids = [operation.get("operationId") for _, _, operation in _operations(spec)]
    assert None not in ids, [f"{m.upper()} {p}" for p, m, o in _operations(spec) if "operationId" not in o]
    assert [name for name, count in Counter(ids).items() if count > 1] == []
    assert [name for name in ids if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", name or "")] == []


def test_operation_ids_of_the_main_routes_are_stable(spec: dict[str, Any]) -> None:
    """Generated function names come from these: renaming one breaks every client built on it."""
    expected = {
        ("get", "/v1/deployments"): "listDeployments",
        ("post", "/v1/deployments"): "createDeployment",
        ("get", "/v1/deployments/{deployment_id}"): "getDeployment",
        ("post", "/v1/deployments/{deployment_id}/scale"): "scaleDeployment",
        ("post", "/v1/agents"): "createAgent",
        ("get", "/v1/agents/{agent_id}"): "getAgent",
        ("post", "/v1/agents/{agent_id}/interact"): "interactWithAgent",
        ("post", "/v1/auth/login"): "login",
        ("post", "/v1/evaluations"): "createEvaluation",
    }
    found = {(m, p): o.get("operationId") for p, m, o in _operations(spec)}
    assert {key: found.get(key) for key in expected} == expected


def test_every_operation_has_a_tag_a_summary_and_a_description(spec: dict[str, Any]) -> None:
    declared = {tag["name"] for tag in spec["tags"]}
    for path, method, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        assert len(operation.get("tags", [])) == 1, where
        assert operation["tags"][0] in declared, where
        assert operation.get("summary", "").strip(), where
        assert operation.get("description", "").strip(), where
        assert operation["description"].strip() != operation["summary"].strip(), where


def test_every_error_status_has_the_error_body(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        assert "default" not in operation["responses"], f"{method.upper()} {path}: a catch-all hides statuses"
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = _response(spec, response).get("content", {}).get("application/json", {}).get("schema")
            if path.startswith("/health") and status == "503":
                assert schema is not None, (method, path)  # a failing check answers the check's own body
            else:
                assert schema == ERROR_REF, (method, path, status)


def test_cross_cutting_statuses_are_documented_where_they_apply(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        responses = operation["responses"]
        where = (method, path)
        assert "500" in responses, where
        if path.startswith("/v1/"):
            assert "429" in responses, where
            assert "Retry-After" in _response(spec, responses["429"])["headers"], where
        else:
            assert "429" not in responses, where  # health checks and docs are never limited
        if "requestBody" in operation:
            assert "413" in responses, where
            assert "400" in responses, where
        if operation.get("security"):
            assert {"401", "403"} <= responses.keys(), where


def test_security_matches_what_each_route_accepts(spec: dict[str, Any], app: Flask) -> None:
    security = {(m, p): o.get("security") for p, m, o in _operations(spec)}
    bearer, key, token = {"bearerAuth": []}, {"apiKey": []}, {"personalToken": []}
    assert security[("get", "/health")] == []
    assert security[("post", "/v1/auth/login")] in (None, [])
    assert security[("get", "/v1/deployments")] == [bearer, token]
    assert security[("post", "/v1/auth/api-keys")] == [bearer]  # a token never mints tokens
    assert security[("get", "/v1/users")] == [bearer]  # nor reaches the admin routes
    assert security[("get", "/v1/evaluations")] == [bearer, token, key]
    assert key in security[("post", "/v1/agents/{agent_id}/interact")]
    assert key in security[("post", "/v1/evaluations")]
    assert key in security[("post", "/v1/deployments/{deployment_id}/results")]
    for (method, path), requirement in security.items():
        if path.startswith("/v1/") and path not in ("/v1/auth/login", "/v1/auth/register"):
            assert requirement, f"{method.upper()} {path} documents no credentials"
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["personalToken"] == {**schemes["personalToken"], "type": "http", "scheme": "bearer"}


def test_each_authenticated_operation_documents_its_row_of_the_permission_table(spec: dict[str, Any]) -> None:
    """`x-required-scope`: the roles, token scopes and agent-key scope that open each operation."""
    rows = {
        (method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)): row for (method, rule), row in PERMISSIONS.items()
    }
    documented = 0
    for path, method, operation in _operations(spec):
        if not operation.get("security"):
            assert "x-required-scope" not in operation, (method, path)
            continue
        row = rows[(method, path)]
        assert operation["x-required-scope"] == {
            "action": row.action,
            "roles": [str(role) for role in row.roles],
            "token": [str(scope) for scope in row.token_scopes],
            "agent_key": row.key_scope,
        }, (method, path)
        documented += 1
    assert documented > 50
    assert spec["paths"]["/v1/agents"]["post"]["x-required-scope"] == {
        "action": "write",
        "roles": ["admin", "developer"],
        "token": ["write"],
        "agent_key": None,
    }


@pytest.mark.parametrize("enum", [DeploymentStatus, DesiredState, AgentStatus, AlertSeverity])
def test_each_enum_is_one_named_schema(spec: dict[str, Any], enum: Any) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas[enum.__name__]["enum"] == [member.value for member in enum]
    # No inline copy of the same value set anywhere else: every use refers to the named schema.
    values = sorted(member.value for member in enum)
    inline = [node for node in _walk(spec["paths"]) if sorted(node.get("enum", [])) == values]
    inline += [
        (name, node)
        for name, schema in schemas.items()
        if name != enum.__name__
        for node in _walk(schema)
        if sorted(node.get("enum", [])) == values
    ]
    assert inline == []


def test_nested_response_objects_are_named_and_typed(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    deployment = schemas["Deployment"]
    assert deployment["properties"]["replicas"]["$ref"] == "#/components/schemas/ReplicaCounts"
    assert deployment["properties"]["instances"]["items"] == {"$ref": "#/components/schemas/Instance"}
    assert deployment["properties"]["config"]["$ref"] == "#/components/schemas/DeploymentConfig"
    assert {"desired", "running", "ready"} <= set(schemas["ReplicaCounts"]["required"])
    assert "port" in schemas["Instance"]["required"]
    assert set(deployment["required"]) >= {"id", "status", "replicas", "instances", "config"}
    for name, schema in schemas.items():
        for node in _walk(schema, skip=RULES_ONLY):
            untyped = node.get("type") == "object" and not {"properties", "additionalProperties", "$ref"} & node.keys()
            assert not untyped, f"{name}: an object with no described keys"


def test_main_request_bodies_have_examples(spec: dict[str, Any]) -> None:
    for method, path in [
        ("post", "/v1/agents"),
        ("post", "/v1/deployments"),
        ("post", "/v1/deployments/{deployment_id}/scale"),
        ("post", "/v1/agents/{agent_id}/interact"),
        ("post", "/v1/evaluations"),
    ]:
        media = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert "example" in media or "examples" in media, (method, path)


def test_request_examples_are_accepted(spec: dict[str, Any], client: FlaskClient, auth: Any, app: Flask) -> None:
    """An example that the service refuses would teach every reader the wrong body."""
    from tests.factories import make_agent

    user, headers = auth.user()
    agent = make_agent(app, user)
    examples = {
        ("post", "/v1/agents"): "/v1/agents",
        ("patch", "/v1/agents/{agent_id}"): f"/v1/agents/{agent['id']}",
        ("post", "/v1/secrets"): "/v1/secrets",
    }
    for (method, path), url in examples.items():
        media = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        response = client.open(url, method=method.upper(), json=media["example"], headers=headers)
        assert response.status_code < 300, (method, path, response.get_json())
