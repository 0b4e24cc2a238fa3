"""The OpenAPI spec's cross-cutting parts: what every route shares, written once here.

Each view documents what is its own (summary, description, `operationId`, request and response
schemas, the statuses its service answers); `auth_required` documents 401/403, and each authenticated
operation's security schemes and `x-required-scope` come from its row of the permission table
(`permissions`). What the layers in front of every view add is documented by `ContractDocs`, an apispec
plugin that sees each operation as it is registered:
- 429 with `Retry-After` on every route the rate limiter counts (`ratelimit.LIMITED_PREFIX`);
- 413 on every operation that takes a body (`MAX_REQUEST_BYTES`, checked before the view runs);
- 500 everywhere: an unexpected failure (the database gone, a defect), rolled back, with the same body.

`finish_spec` then adds what a schema class cannot say: cross-field rules (`OPENAPI_RULES` of the
schema modules), maxima that come from configuration, the no-NUL pattern of request strings, and the
security schemes. Client generators (openapi-python-client, openapi-typescript) are run against the
result in tests/clients, so a route that breaks them fails the suite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from apispec import APISpec, BasePlugin
from flask import Flask

from deploy_service.extensions import api
from deploy_service.permissions import PERMISSIONS, Permission
from deploy_service.ratelimit import LIMITED_PREFIX
from deploy_service.schemas import agent as agent_schemas
from deploy_service.schemas import deployment as deployment_schemas
from deploy_service.schemas.common import NO_NUL_PATTERN
from deploy_service.settings import settings_for

ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
RATE_LIMITED = "RATE_LIMITED"
BODY_TOO_LARGE = "BODY_TOO_LARGE"
INTERNAL_ERROR = "INTERNAL_ERROR"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from `POST /v1/auth/login` (the refresh route takes the refresh token).",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An agent's API key (`dsk_...`, `POST /v1/agents/{agent_id}/api-key`), on the routes its "
        "scopes open (`x-required-scope.agent_key`).",
    },
    "personalToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "dsp_ personal access token",
        "description": "A personal access token (`dsp_...`, `POST /v1/auth/api-keys`) as `Authorization: Bearer "
        "dsp_...` (or as `X-API-Key: dsp_...`): acts as its user within its scopes (`x-required-scope.token`).",
    },
}
BODY_OPERATIONS = ("post", "put", "patch", "delete")
# Tags that operations use but no blueprint declares (a blueprint's name is its tag).
EXTRA_TAGS = {"metrics": "Figures over every deployment you can see."}


class ContractDocs(BasePlugin):
    """Adds to each operation the statuses that the layers in front of every view can answer."""

    def init_spec(self, spec: APISpec) -> None:
        spec.components.response(
            RATE_LIMITED,
            {
                "description": "Too many requests: `rate_limited`; retry after the given seconds.",
                "headers": {
                    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
                },
                "content": ERROR_CONTENT,
            },
        )
        spec.components.response(
            BODY_TOO_LARGE,
            {
                "description": "The body is larger than `MAX_REQUEST_BYTES`: `payload_too_large`.",
                "content": ERROR_CONTENT,
            },
        )
        spec.components.response(
            INTERNAL_ERROR,
            {
                "description": "`internal_error`: an unexpected failure; nothing was written, and it is logged.",
                "content": ERROR_CONTENT,
            },
        )

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None, **_: Any) -> None:
        for method, operation in (operations or {}).items():
            permission = DOCUMENTED_PERMISSIONS.get((method.upper(), path or ""))
            if permission is not None and {"401", 401} & set(operation.get("responses", {})):
                _document_permission(operation, permission)
            responses = operation.setdefault("responses", {})
            if path is not None and path.startswith(LIMITED_PREFIX):
                responses.setdefault("429", RATE_LIMITED)
            if method in BODY_OPERATIONS and "requestBody" in operation:
                responses.setdefault("413", BODY_TOO_LARGE)
            responses.setdefault("500", INTERNAL_ERROR)


def _openapi_path(rule: str) -> str:
    """`/v1/agents/<id:agent_id>` → `/v1/agents/{agent_id}`."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


DOCUMENTED_PERMISSIONS: dict[tuple[str, str], Permission] = {
    (method, _openapi_path(rule)): permission for (method, rule), permission in PERMISSIONS.items()
}


def _document_permission(operation: dict[str, Any], permission: Permission) -> None:
    """An authenticated operation's row of the permission table: its security schemes and `x-required-scope`.

    `x-required-scope` is `{action, roles, token, agent_key}`: the roles whose users may call it, the token
    scopes that open it (empty: no personal token may), and the agent-key scope that does (null: none).
    """
    security: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    if permission.token_scopes:
        security.append({"personalToken": []})
    if permission.key_scope is not None:
        security.append({"apiKey": []})
    operation["security"] = security
    operation["x-required-scope"] = {
        "action": str(permission.action),
        "roles": [str(role) for role in permission.roles],
        "token": [str(scope) for scope in permission.token_scopes],
        "agent_key": str(permission.key_scope) if permission.key_scope is not None else None,
    }


def _merge(target: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merge `extra` into a component schema, recursing into the objects both have."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _no_nul_strings(node: Any) -> None:
    """Give every free-text string schema under `node` the no-NUL pattern (PostgreSQL cannot store NUL)."""
    if isinstance(node, dict):
        types = node.get("type")
        is_string = types == "string" or (isinstance(types, list) and "string" in types)
        if is_string and not {"pattern", "enum", "format"} & node.keys():
            node["pattern"] = NO_NUL_PATTERN
        if isinstance(node.get("additionalProperties"), dict) and "propertyNames" not in node:
            node["propertyNames"] = {"pattern": NO_NUL_PATTERN}
        for value in node.values():
            _no_nul_strings(value)
    elif isinstance(node, list):
        for value in node:
            _no_nul_strings(value)


def _request_schema_names(schemas: Mapping[str, Any], paths: Mapping[str, Any]) -> set[str]:
    """The component schemas that request bodies use, directly or through references."""
    names: set[str] = set()
    pending = [
        media["schema"]
        for operations in paths.values()
        for operation in operations.values()
        if isinstance(operation, dict)
        for media in operation.get("requestBody", {}).get("content", {}).values()
    ]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            name = ref.rsplit("/", 1)[-1] if ref.startswith("#/components/schemas/") else None
            if name and name not in names and name in schemas:
                names.add(name)
                pending.append(schemas[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return names


def finish_spec(app: Flask) -> None:
    """Add to the registered spec what schema classes cannot say (see the module docstring)."""
    schemas = api.spec.components.schemas
    for rules in (agent_schemas.OPENAPI_RULES, deployment_schemas.OPENAPI_RULES):
        for name, extra in rules.items():
            _merge(schemas[name], extra)
    # Maxima that come from configuration, so that the spec states this deployment's limits.
    limits = settings_for(app).agents
    _merge(
        schemas["ResourcesInput"],
        {"properties": {"cpu": {"maximum": limits.max_cpu}, "memory_mb": {"maximum": limits.max_memory_mb}}},
    )
    for name in ("DeployOptions", "DeployBody", "DeploymentCreate", "Scale"):
        _merge(schemas[name], {"properties": {"replicas": {"maximum": limits.max_replicas}}})
    stored_text_max = settings_for(app).stored_text_max
    _merge(schemas["EventReport"], {"properties": {"message": {"maxLength": stored_text_max}}})
    for name in _request_schema_names(schemas, api.spec.to_dict()["paths"]):
        _no_nul_strings(schemas[name])
    for name, scheme in SECURITY_SCHEMES.items():
        api.spec.components.security_scheme(name, scheme)
    _declare_used_tags(api.spec)


def _declare_used_tags(spec: APISpec) -> None:
    """Declare every tag an operation uses, and only those (the agent-centric deploy routes, a blueprint
    of their own, are tagged `deployments`: their blueprint's own tag would be an empty group)."""
    paths = spec.to_dict()["paths"]
    used = {
        tag for item in paths.values() for op in item.values() if isinstance(op, dict) for tag in op.get("tags", [])
    }
    declared = spec.to_dict().get("tags", [])
    kept = [tag for tag in declared if tag["name"] in used]
    kept += [{"name": name, "description": EXTRA_TAGS[name]} for name in sorted(used - {t["name"] for t in kept})]
    spec._tags[:] = kept  # apispec keeps tags in a list that only `tag()` appends to
