"""Access to the app's container runner for the services."""

from __future__ import annotations

from flask import current_app

from deploy_service.runner.base import Runner

EXTENSION_KEY = "deploy_service.runner"


def runner() -> Runner:
    """The runner bound to the current app (created by `create_app`, replaceable in tests)."""
    bound: Runner = current_app.extensions[EXTENSION_KEY]
    return bound


def require_engine() -> Runner:
    """The runner, after checking that its engine answers: mutating calls refuse to write otherwise.

    Raises:
        EngineUnavailable: 503, before anything is written.
    """
    bound = runner()
    bound.ping()
    return bound
