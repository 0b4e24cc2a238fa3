"""HTTP layer: one blueprint module per resource. Views parse, call a service, return."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from flask import Flask, Response, send_from_directory

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
from deploy_service.extensions import api

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
SWAGGER_UI_ASSETS = Path(swagger_ui_bundle.swagger_ui_path)

__all__ = ["register_blueprints", "tokens"]


def register_blueprints(app: Flask) -> None:
    """Register every resource blueprint with the smorest Api, the body-size check, and the Swagger UI assets."""
    app.before_request(common.refuse_oversized_streamed_body)
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    api.spec.components.security_scheme("apiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})

    @app.get("/swagger-ui/<path:filename>")
    def swagger_ui_asset(filename: str) -> Response:
        """Swagger UI's static files, served locally so /docs works without a CDN."""
        return send_from_directory(SWAGGER_UI_ASSETS, filename, max_age=86400)
