"""HTTP layer: one blueprint module per resource. Views parse, call a service, return."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, send_from_directory
from openapi_ui_bundles import swagger_ui

from deploy_service.api import (
    agents,
    alerts,
    api_keys,
    auth,
    common,
    deployments,
    evaluations,
    health,
    secrets,
    tokens,
    users,
    webhooks,
)
from deploy_service.api.common import ResourceIdConverter, property_names
from deploy_service.extensions import api
from deploy_service.schemas import agent as agent_schemas
from deploy_service.schemas import deployment as deployment_schemas
from deploy_service.schemas.common import NO_NUL_PATTERN
from deploy_service.settings import settings_for

BLUEPRINTS = (
    health.blp,
    auth.blp,
    users.blp,
    agents.blp,
    api_keys.blp,
    alerts.blp,
    deployments.agent_blp,
    deployments.blp,
    evaluations.blp,
    secrets.blp,
    webhooks.blp,
)
# Swagger UI 5 (renders OpenAPI 3.1, which the spec is), vendored by openapi-ui-bundles.
SWAGGER_UI_ASSETS = Path(swagger_ui.static_path)

__all__ = ["register_blueprints", "tokens"]


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


def _no_nul_in_requests(schemas: dict[str, Any], paths: Mapping[str, Any]) -> None:
    """Apply `_no_nul_strings` to the request bodies' component schemas (and those they reference)."""
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
    for name in names:
        _no_nul_strings(schemas[name])


def register_blueprints(app: Flask) -> None:
    """Register every resource blueprint with the smorest Api, the body-size check, and the Swagger UI assets."""
    app.before_request(common.refuse_oversized_streamed_body)
    api.ma_plugin.converter.add_attribute_function(property_names)
    app.url_map.converters["id"] = ResourceIdConverter
    api.register_converter(ResourceIdConverter, lambda _converter: {"type": "string"})
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    for rules in (agent_schemas.OPENAPI_RULES, deployment_schemas.OPENAPI_RULES):
        for name, extra in rules.items():
            _merge(api.spec.components.schemas[name], extra)
    # Maxima that come from configuration, so that the spec states this deployment's limits.
    limits = settings_for(app).agents
    _merge(
        api.spec.components.schemas["Resources"],
        {
            "properties": {
                "cpu": {"maximum": limits.max_cpu},
                "memory_mb": {"maximum": limits.max_memory_mb},
            }
        },
    )
    for name in ("DeployOptions", "DeployBody", "Scale"):
        _merge(api.spec.components.schemas[name], {"properties": {"replicas": {"maximum": limits.max_replicas}}})
    _no_nul_in_requests(api.spec.components.schemas, api.spec.to_dict()["paths"])
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    api.spec.components.security_scheme("apiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})

    @app.get("/swagger-ui/<path:filename>")
    def swagger_ui_asset(filename: str) -> Response:
        """Swagger UI's static files, served locally so /docs works without a CDN."""
        return send_from_directory(SWAGGER_UI_ASSETS, filename, max_age=86400)
