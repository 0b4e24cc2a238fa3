"""Deploy Service: run AI agents as containers.

`create_app` builds the Flask application: configuration, extensions, blueprints, error handlers and
CLI commands — nothing else. Migrations are a start step (`flask db upgrade`, or `python app.py`),
never run inside the factory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix

from deploy_service import rawdb
from deploy_service.api import register_blueprints
from deploy_service.application import Application
from deploy_service.cli import register_commands
from deploy_service.config import load_config
from deploy_service.errors import register_error_handlers, runner_settings_checked
from deploy_service.extensions import api, cors, db, jwt, migrate
from deploy_service.observability import init_metrics
from deploy_service.ratelimit import limiter
from deploy_service.runner import create_runner
from deploy_service.security import init_security
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import EXTENSION_KEY as SETTINGS_KEY
from deploy_service.settings import JWT_ALGORITHM, Settings, settings_for, settings_from, startup_warnings

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"

# Settings that are part of the design, not of the deployment.
FIXED_CONFIG: dict[str, Any] = {
    "API_TITLE": "Deploy Service",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.1.0",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    "OPENAPI_SWAGGER_UI_URL": "/swagger-ui/",
    "OPENAPI_REDOC_PATH": "redoc",
    "JWT_ALGORITHM": JWT_ALGORITHM,
    "JWT_DECODE_ALGORITHMS": [JWT_ALGORITHM],
    "JWT_TOKEN_LOCATION": ["headers"],
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application.

    Args:
        config: overrides applied on top of the environment (tests pass their database here).

    The configuration is turned into typed settings once, here (`settings.settings_from`), and kept in
    `app.extensions`; the rest of the service reads those, never `app.config`.

    Raises:
        ConfigError: the configuration is not safe to run with (e.g. production without SECRET_KEY).
    """
    app = Application(__name__, instance_relative_config=True)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config.update(load_config())
    app.config.update(FIXED_CONFIG)
    if config:
        app.config.update(config)
    app.config["OPENAPI_REDOC_URL"] = app.config["REDOC_JS_URL"]
    app.config.setdefault("VERSION", __version__)
    app.config["STARTED_MONOTONIC"] = time.monotonic()
    settings = settings_from(app.config)
    app.extensions[SETTINGS_KEY] = settings
    if settings.http.proxy_count:
        hops = settings.http.proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    _configure_logging(app)
    for warning in startup_warnings(app.config):
        app.logger.warning(warning)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    init_metrics(app)
    register_commands(app)
    return app


def _configure_logging(app: Flask) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("deploy_service").setLevel(app.config["LOG_LEVEL"])


def _engine_options(app: Flask) -> dict[str, Any]:
    uri: str = app.config["SQLALCHEMY_DATABASE_URI"]
    options: dict[str, Any] = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    # A failed statement's parameters (password and key hashes, ciphertexts) stay out of exception
    # messages, and so out of the tracebacks that the 500 handler and the reconciler log.
    options.setdefault("hide_parameters", True)
    if uri.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": app.config["SQLITE_BUSY_TIMEOUT_MS"] / 1000})
    else:
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_size", app.config["DB_POOL_SIZE"])
    return options


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers and one writer work at once; the busy timeout makes writers wait, not fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _namespace_for(app: Flask) -> str:
    """The default engine namespace: derived from the database, so that services with different
    databases sharing one engine never see (or remove) each other's containers."""
    with app.app_context():
        url = db.engine.url.render_as_string(hide_password=True)
    return "ds-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def register_extensions(app: Flask) -> None:
    """Bind the unbound extensions to `app`."""
    # First, because it may refuse the configuration: the limiter and the smorest Api are process-wide
    # objects that keep the last app's settings, so a refused app must not have reached them.
    init_security(app)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = _engine_options(app)
    app.config["JWT_SECRET_KEY"] = app.config.get("JWT_SECRET_KEY") or app.config["SECRET_KEY"]
    db.init_app(app)
    rawdb.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True, compare_type=True)
    jwt.init_app(app)
    limiter.init_app(app)
    api.init_app(app)
    origins = list(settings_for(app).http.allowed_origins)
    wildcard = "*" in origins
    cors.init_app(
        app,
        resources={r"/v1/*": {"origins": "*" if wildcard else origins}},
        supports_credentials=not wildcard,
        send_wildcard=wildcard,
        expose_headers=["Retry-After"],
    )
    settings = settings_for(app)
    if not app.config.get("ENGINE_NAMESPACE"):
        app.config["ENGINE_NAMESPACE"] = _namespace_for(app)
        settings = _with_namespace(settings, app.config["ENGINE_NAMESPACE"])
        app.extensions[SETTINGS_KEY] = settings
    with runner_settings_checked():
        app.extensions[RUNNER_KEY] = create_runner(settings.runner)


def _with_namespace(settings: Settings, namespace: str) -> Settings:
    return replace(settings, runner=replace(settings.runner, namespace=namespace))
