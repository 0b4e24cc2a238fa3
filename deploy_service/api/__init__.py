"""HTTP layer: one blueprint module per resource. Views parse, call a service, return."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, send_from_directory
from openapi_ui_bundles import redoc, swagger_ui

from deploy_service.api import (
    agents,
    alerts,
    api_keys,
    auth,
    common,
    deployments,
    evaluations,
    feed,
    health,
    openapi,
    releases,
    secrets,
    system,
    tokens,
    users,
    webhooks,
)
from deploy_service.api.common import ResourceIdConverter, property_names
from deploy_service.extensions import api
from deploy_service.ratelimit import limiter
from deploy_service.schemas.common import document_named_fields

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
    feed.blp,
    secrets.blp,
    system.blp,
    webhooks.blp,
)
# Swagger UI 5 (renders OpenAPI 3.1, which the spec is), vendored by openapi-ui-bundles.
SWAGGER_UI_ASSETS = Path(swagger_ui.static_path)
# ReDoc 2's standalone bundle, from the same pinned package: /redoc needs no CDN either.
REDOC_ASSETS = Path(redoc.static_path)

__all__ = ["register_blueprints", "releases", "tokens"]


def register_blueprints(app: Flask) -> None:
    """Register every resource blueprint with the smorest Api, the body-size check and the rate limiter, and the
    Swagger UI and ReDoc assets."""
    app.url_value_preprocessor(common.refuse_nul_in_path)
    api.ma_plugin.converter.add_attribute_function(property_names)
    api.ma_plugin.converter.add_attribute_function(document_named_fields)
    app.url_map.converters["id"] = ResourceIdConverter
    api.register_converter(ResourceIdConverter, lambda _converter: {"type": "string"})
    contract_docs = openapi.ContractDocs()
    contract_docs.init_spec(api.spec)
    api.spec.plugins.append(contract_docs)
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    # The body-size check runs for the blueprints with routes that take a body, after the limiter's check
    # (which `limit_blueprints` puts first), so an over-limit caller is refused before any body is read.
    taking_bodies = {
        rule.endpoint.rpartition(".")[0]
        for rule in app.url_map.iter_rules()
        if (rule.methods or set()) & common.BODY_METHODS
    }
    for name in sorted(taking_bodies - {""}):
        app.before_request_funcs.setdefault(name, []).append(common.refuse_oversized_streamed_body)
    limiter.limit_blueprints(app)
    openapi.finish_spec(app)

    @app.get("/swagger-ui/<path:filename>")
    def swagger_ui_asset(filename: str) -> Response:
        """Swagger UI's static files, served locally so /docs works without a CDN."""
        return send_from_directory(SWAGGER_UI_ASSETS, filename, max_age=86400)

    @app.get("/redoc-ui/<path:filename>")
    def redoc_asset(filename: str) -> Response:
        """ReDoc's static files, served locally so /redoc works without a CDN."""
        return send_from_directory(REDOC_ASSETS, filename, max_age=86400)
