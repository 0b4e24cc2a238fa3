"""The route table covers the whole app: a route no probe classifies fails here, so it cannot slip past."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from deploy_service.permissions import permission_for
from tests.security.routes import ANON, PROBES, PUBLIC, USER_OR_KEY

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _normalise(rule: str) -> str:
    """`/v1/agents/<string:agent_id>` and `/v1/agents/{agent_id}` → `/v1/agents/{agent_id}`."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def test_every_route_of_the_app_is_classified(app: Flask) -> None:
    served = {
        (method, rule.rule) for rule in app.url_map.iter_rules() for method in (rule.methods or set()) - IGNORED_METHODS
    }
    classified = {(probe.method, probe.rule) for probe in PROBES}
    assert served - classified == set(), "routes that no probe of tests/security/routes.py classifies"
    assert classified - served == set(), "probes of routes the app no longer has"


def test_every_operation_of_the_openapi_spec_is_classified(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method.upper() not in IGNORED_METHODS and method != "parameters"
    }
    classified = {(probe.method, _normalise(probe.rule)) for probe in PROBES}
    assert len(documented) > 50
    assert documented - classified == set()


def test_every_route_naming_a_resource_says_what_a_stranger_gets() -> None:
    for probe in PROBES:
        if probe.access != PUBLIC and "_id>" in probe.rule:
            assert probe.other is not None, probe.id
        if probe.other is not None:
            assert probe.placeholders(), probe.id


def test_every_documented_protected_operation_declares_its_security(client: FlaskClient) -> None:
    """The spec tells clients which routes need a token, which also take a personal token, and which an API key."""
    spec = client.get("/openapi.json").get_json()
    for probe in PROBES:
        if not probe.rule.startswith("/v1/"):
            continue
        operation = spec["paths"][_normalise(probe.rule)][probe.method.lower()]
        schemes = {name for requirement in operation.get("security", []) for name in requirement}
        if probe.access == ANON:
            assert schemes == set(), probe.id
            continue
        permission = permission_for(probe.method, probe.rule)
        assert permission is not None, probe.id
        expected = {"bearerAuth"} | ({"personalToken"} if permission.token_scopes else set())
        if probe.access == USER_OR_KEY:
            assert permission.key_scope == probe.key_scope, probe.id
            expected |= {"apiKey"}
        assert schemes == expected, probe.id
        assert operation["x-required-scope"]["agent_key"] == probe.key_scope, probe.id
