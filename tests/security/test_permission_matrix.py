"""The whole permission matrix, generated from the permission table: every route × credential → its status.

Credentials: an access JWT of each role (`admin`, `developer`, `user`), a developer's personal token of each
scope (`read`, `write`, `deploy`), and an agent key of each scope (`invoke`, `telemetry`, `results`) on the
victim's own agent. For every probe of the attack matrix (tests/security/routes.py: every route the app
serves) the expected answer is computed from `deploy_service.permissions` alone: where the table opens the
route to the credential, the owner's success status (`Probe.ok`, with the state arranged); everywhere else
403 `forbidden`, with nothing of the victim's changed. A route missing from the table fails
`test_every_route_the_app_serves_has_a_row`. The table itself is held to the contract by
`test_the_table_says_what_the_contract_says`, so the matrix checks the enforcement against the table and the
table against the contract.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from deploy_service.extensions import db
from deploy_service.models import ApiKeyScope, Role, TokenScope, User
from deploy_service.permissions import (
    PERMISSIONS,
    PLANNED_ROUTES,
    ROLE_ACTIONS,
    Action,
    Permission,
    permission_for,
    token_actions,
    token_scopes_for_role,
)
from deploy_service.services import api_keys as key_service
from deploy_service.services import personal_tokens as token_service
from tests.helpers import assert_error
from tests.security.conftest import World, arranged_ids
from tests.security.routes import ACCESS_ROUTES, ADMIN, PROTECTED, REFRESH, USER, USER_OR_KEY, Probe

Credential = tuple[str, str]
"""(kind, name): `("jwt", role)`, `("token", scope)` or `("key", scope)`."""

CREDENTIALS: tuple[Credential, ...] = (
    *(("jwt", str(role)) for role in Role),
    *(("token", str(scope)) for scope in TokenScope),
    *(("key", str(scope)) for scope in ApiKeyScope),
)
TOKEN_OWNER_ROLE = Role.DEVELOPER
"""The role of a token's user in the matrix: one whose role caps no scope, so the scope alone decides."""


def _row(probe: Probe) -> Permission:
    permission = permission_for(probe.method, probe.rule)
    assert permission is not None, f"{probe.method} {probe.rule} has no row in the permission table"
    return permission


def allowed(probe: Probe, credential: Credential) -> bool:
    """Whether the table opens `probe`'s route to `credential` (the whole expectation of the matrix)."""
    kind, name = credential
    if probe.access == REFRESH:  # takes a refresh JWT only; a token or a key is refused (403)
        return False
    permission = _row(probe)
    if kind == "jwt":
        return permission.action in ROLE_ACTIONS[Role(name)]
    if kind == "token":
        return permission.takes_tokens and permission.action in token_actions(TOKEN_OWNER_ROLE, [name])
    return permission.key_scope == name


MATRIX = tuple(
    (probe, credential)
    for probe in (*ACCESS_ROUTES, *(p for p in PROTECTED if p.access == REFRESH))
    for credential in CREDENTIALS
    if not (probe.access == REFRESH and credential[0] == "jwt")
)
ALLOWED = tuple((probe, credential) for probe, credential in MATRIX if allowed(probe, credential))
REFUSED_PROBES = tuple({id(probe): probe for probe, credential in MATRIX if not allowed(probe, credential)}.values())


def _case_id(probe: Probe, credential: Credential) -> str:
    return f"{probe.id} as {credential[0]}:{credential[1]}"


def _set_role(world: World, role: str) -> None:
    with world.app.app_context():
        user = db.session.get(User, world.victim.user.id)
        assert user is not None
        user.role = role
        db.session.commit()


def _role_of(credential: Credential) -> str:
    kind, name = credential
    return name if kind == "jwt" else TOKEN_OWNER_ROLE


def _headers(world: World, credential: Credential) -> dict[str, str]:
    """Headers of `credential` for the victim (a token or key is issued for it), its role set as needed."""
    kind, name = credential
    victim = world.victim
    _set_role(world, _role_of(credential))
    if kind == "jwt":
        return victim.headers
    with world.app.app_context():
        user = db.session.get(User, victim.user.id)
        assert user is not None
        if kind == "token":
            _token_row, token = token_service.create_token(user, name=f"matrix-{name}", scopes=[name])
            return {"Authorization": f"Bearer {token}"}
        _key_row, key = key_service.create_key(user, victim.ids["agent_id"], name=f"matrix-{name}", scopes=[name])
        return {"X-API-Key": key}


def _send(world: World, probe: Probe, ids: dict[str, str], headers: dict[str, str]) -> Any:
    response = world.request(probe, ids, headers)
    try:
        return response.status_code, response.get_json(silent=True)
    finally:
        response.close()


@pytest.mark.parametrize(("probe", "credential"), ALLOWED, ids=[_case_id(p, c) for p, c in ALLOWED])
def test_what_the_table_opens_answers_the_routes_success(world: World, probe: Probe, credential: Credential) -> None:
    headers = _headers(world, credential)
    status, body = _send(world, probe, arranged_ids(world, probe), headers)
    assert status == probe.ok, (status, body)


@pytest.mark.parametrize("probe", REFUSED_PROBES, ids=[probe.id for probe in REFUSED_PROBES])
def test_what_the_table_closes_is_403_and_changes_nothing(world: World, probe: Probe) -> None:
    """Every credential the table refuses on this route, one after another in one world: 403, nothing changed."""
    refused = [c for c in CREDENTIALS if (probe, c) in MATRIX and not allowed(probe, c)]
    assert refused
    for credential in refused:
        headers = _headers(world, credential)
        _set_role(world, TOKEN_OWNER_ROLE)  # the snapshot reads everything the victim owns
        before = world.victim.snapshot()
        _set_role(world, _role_of(credential))
        response = world.request(probe, world.victim.ids, headers)
        assert_error(response, 403, "forbidden")
        _set_role(world, TOKEN_OWNER_ROLE)
        assert world.victim.snapshot() == before, (probe.id, credential)


def test_every_route_the_app_serves_has_a_row(app: Flask) -> None:
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    anonymous = {("POST", "/v1/auth/login"), ("POST", "/v1/auth/register")}
    assert served - anonymous - PERMISSIONS.keys() == set()
    assert PERMISSIONS.keys() - served <= PLANNED_ROUTES


def test_the_matrix_covers_every_credential_and_route() -> None:
    assert {credential for _, credential in MATRIX} == set(CREDENTIALS)
    assert {probe.access for probe, _ in MATRIX} == {USER, USER_OR_KEY, ADMIN, REFRESH}
    assert len(MATRIX) > 500 and len(ALLOWED) > 150


def test_the_table_says_what_the_contract_says() -> None:
    """The contract's rules, stated apart from the table's rows (the matrix holds the service to the table)."""
    user_writes = [
        key for key, row in PERMISSIONS.items() if row.action not in ROLE_ACTIONS[Role.USER] and key[0] != "GET"
    ]
    # `user`: reads its own resources and calls interact; every other write is refused.
    assert all(
        row.action in ROLE_ACTIONS[Role.USER]
        for (method, _), row in PERMISSIONS.items()
        if method == "GET" and row.action != Action.ADMIN
    )
    assert PERMISSIONS[("POST", "/v1/agents/<string:agent_id>/interact")].action in ROLE_ACTIONS[Role.USER]
    assert ("POST", "/v1/agents") in user_writes and ("POST", "/v1/deployments") in user_writes
    # `developer`: everything but the admin routes; `admin`: everything.
    assert ROLE_ACTIONS[Role.ADMIN] == frozenset(Action)
    assert ROLE_ACTIONS[Role.DEVELOPER] == frozenset(Action) - {Action.ADMIN}
    # Tokens never mint, list or revoke tokens, refresh, log out, or reach /v1/users*.
    for (method, rule), row in PERMISSIONS.items():
        if (
            rule.startswith("/v1/users")
            or rule.startswith("/v1/auth/api-keys")
            or rule in ("/v1/auth/refresh", "/v1/auth/logout")
        ):
            assert row.token_scopes == (), (method, rule)
    assert PERMISSIONS[("GET", "/v1/auth/me")].token_scopes == tuple(TokenScope)
    # read = every GET the user may make; deploy = deploy, scale, restart, stop, rollback, delete deployments.
    for (method, rule), row in PERMISSIONS.items():
        if method == "GET" and row.takes_tokens:
            assert TokenScope.READ in row.token_scopes, rule
    deploying = {
        ("POST", "/v1/deployments"),
        ("DELETE", "/v1/deployments/<id:deployment_id>"),
        *(
            ("POST", f"/v1/deployments/<string:deployment_id>/{verb}")
            for verb in ("restart", "scale", "stop", "rollback")
        ),
    }
    assert all(PERMISSIONS[key].token_scopes == (TokenScope.DEPLOY,) for key in deploying)
    assert PERMISSIONS[("POST", "/v1/secrets")].token_scopes == (TokenScope.WRITE,)
    # A `user` may give its tokens `read` only; developers and admins any scope.
    assert token_scopes_for_role("user") == (TokenScope.READ,)
    assert token_scopes_for_role("developer") == tuple(TokenScope)
    # Agent keys: interact (invoke), evaluations in and out (telemetry), results (results); nothing else.
    keyed = {key: str(row.key_scope) for key, row in PERMISSIONS.items() if row.key_scope is not None}
    assert keyed == {
        ("POST", "/v1/agents/<string:agent_id>/interact"): "invoke",
        ("GET", "/v1/deployments/<string:deployment_id>/results"): "results",
        ("POST", "/v1/deployments/<string:deployment_id>/results"): "results",
        ("POST", "/v1/deployments/<string:deployment_id>/events"): "results",
        ("GET", "/v1/evaluations"): "telemetry",
        ("POST", "/v1/evaluations"): "telemetry",
        ("GET", "/v1/evaluations/stats"): "telemetry",
    }
