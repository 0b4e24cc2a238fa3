"""Who may do what: the one permission table, consulted by the auth check of every `/v1` route.

Each route (method and Flask rule) does one `Action`. A credential may do an action when:
- an access JWT: the user's role holds it (`ROLE_ACTIONS`);
- a personal access token (`dsp_`): the user's role holds it *and* one of the token's scopes opens it
  (`TOKEN_SCOPE_ACTIONS`), and the route takes tokens at all (never the session routes, never the
  admin routes, never `/v1/users*`);
- an agent's API key (`dsk_`): the route names the scope a key needs (`Permission.key_scope`) and the
  key has it; the key acts for its own agent only (the services scope what it reaches).
Whose resources a caller reaches (its own; an admin everyone's) is the services' business
(`services.common.scope_to_owner`); this table says only which routes a credential may call.

`api.common.Blueprint.auth_required` looks the request's route up here (a route missing from the table is
refused: closed by default), the OpenAPI spec documents each operation's row (`x-required-scope`,
`x-required-roles` and its security schemes, `api.openapi`), and tests/security generate the whole
matrix of route × role × token scope × agent key from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from deploy_service.models.api_key import ApiKeyScope
from deploy_service.models.personal_token import TokenScope
from deploy_service.models.user import Role


class Action(StrEnum):
    """What a route does, as far as rights go."""

    READ = "read"
    """Every GET of one's own resources."""
    WRITE = "write"
    """Create, update or delete agents, secrets, webhooks, keys; report results and evaluations; alerts."""
    DEPLOY = "deploy"
    """Deploy, scale, restart, stop, roll back, delete deployments."""
    INTERACT = "interact"
    """Call a deployed agent."""
    ACCOUNT = "account"
    """Read one's own account (`GET /v1/auth/me`): any credential of an active user."""
    SESSION = "session"
    """Manage one's login session and personal tokens: a logged-in user only, never a token."""
    ADMIN = "admin"
    """Manage users: an admin, logged in."""


ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.DEVELOPER: frozenset(Action) - {Action.ADMIN},
    Role.USER: frozenset({Action.READ, Action.INTERACT, Action.ACCOUNT, Action.SESSION}),
}

TOKEN_SCOPE_ACTIONS: Mapping[TokenScope, frozenset[Action]] = {
    TokenScope.READ: frozenset({Action.READ, Action.ACCOUNT}),
    TokenScope.WRITE: frozenset({Action.WRITE, Action.INTERACT, Action.ACCOUNT}),
    TokenScope.DEPLOY: frozenset({Action.DEPLOY, Action.ACCOUNT}),
}
TOKEN_ACTIONS = frozenset().union(*TOKEN_SCOPE_ACTIONS.values())
"""Everything a personal token can ever do; `SESSION` and `ADMIN` are not among them."""


_ACTIONS_BY_ROLE_NAME: Mapping[str, frozenset[Action]] = {str(role): actions for role, actions in ROLE_ACTIONS.items()}
_NOTHING: frozenset[Action] = frozenset()


def role_actions(role: str) -> frozenset[Action]:
    """What a role may do; an unknown role (a row written by hand) may do nothing. (Asked on every request.)"""
    return _ACTIONS_BY_ROLE_NAME.get(role, _NOTHING)


def token_scopes_for_role(role: str) -> tuple[TokenScope, ...]:
    """The scopes a user of `role` may give a token: those that open nothing beyond the role."""
    allowed = role_actions(role)
    return tuple(scope for scope, actions in TOKEN_SCOPE_ACTIONS.items() if actions <= allowed)


def token_actions(role: str, scopes: Iterable[str]) -> frozenset[Action]:
    """What a token with `scopes` of a user with `role` may do: the scopes' actions within the role's."""
    opened: set[Action] = set()
    for scope in scopes:
        try:
            opened |= TOKEN_SCOPE_ACTIONS[TokenScope(scope)]
        except ValueError:
            continue
    return frozenset(opened) & role_actions(role)


@dataclass(frozen=True)
class Permission:
    """One route's row: the action it does, and the agent-key scope that also opens it (if any)."""

    action: Action
    key_scope: ApiKeyScope | None = None
    tokens: bool = True
    """Whether personal tokens may call it at all (within their scopes); never for `/v1/users*`."""

    @property
    def takes_tokens(self) -> bool:
        return self.tokens and self.action in TOKEN_ACTIONS

    @property
    def token_scopes(self) -> tuple[TokenScope, ...]:
        """The token scopes that open the route (empty: no token may call it)."""
        if not self.takes_tokens:
            return ()
        return tuple(scope for scope, actions in TOKEN_SCOPE_ACTIONS.items() if self.action in actions)

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles whose users may call the route."""
        return tuple(role for role, actions in ROLE_ACTIONS.items() if self.action in actions)


READ = Permission(Action.READ)
WRITE = Permission(Action.WRITE)
DEPLOY = Permission(Action.DEPLOY)
ADMIN = Permission(Action.ADMIN, tokens=False)
SESSION = Permission(Action.SESSION)

A = "/v1/agents/<string:agent_id>"
A_ITEM = "/v1/agents/<id:agent_id>"
D = "/v1/deployments/<string:deployment_id>"
D_ITEM = "/v1/deployments/<id:deployment_id>"

PERMISSIONS: Mapping[tuple[str, str], Permission] = {
    # Accounts and tokens.
    ("POST", "/v1/auth/refresh"): SESSION,
    ("POST", "/v1/auth/logout"): SESSION,
    ("GET", "/v1/auth/me"): Permission(Action.ACCOUNT),
    ("POST", "/v1/auth/api-keys"): SESSION,
    ("GET", "/v1/auth/api-keys"): SESSION,
    ("DELETE", "/v1/auth/api-keys/<string:token_id>"): SESSION,
    # Users.
    ("GET", "/v1/users"): ADMIN,
    ("GET", "/v1/users/<id:user_id>"): ADMIN,
    ("PATCH", "/v1/users/<id:user_id>"): ADMIN,
    ("GET", "/v1/users/<string:user_id>/deployed-agents"): Permission(Action.READ, tokens=False),
    # Agents.
    ("GET", "/v1/agents"): READ,
    ("POST", "/v1/agents"): WRITE,
    ("GET", A_ITEM): READ,
    ("PATCH", A_ITEM): WRITE,
    ("DELETE", A_ITEM): WRITE,
    ("GET", A + "/stats"): READ,
    ("POST", A + "/interact"): Permission(Action.INTERACT, key_scope=ApiKeyScope.INVOKE),
    ("GET", A + "/invocations"): READ,
    ("POST", A + "/api-key"): WRITE,
    ("GET", A + "/api-keys"): READ,
    ("DELETE", A + "/api-keys/<string:key_id>"): WRITE,
    # Deployments.
    ("POST", "/v1/agents/deploy"): DEPLOY,
    ("POST", A + "/deploy"): DEPLOY,
    ("POST", A + "/undeploy"): DEPLOY,
    ("POST", A + "/restart"): DEPLOY,
    ("GET", A + "/deployment-status"): READ,
    ("GET", "/v1/deployments"): READ,
    ("POST", "/v1/deployments"): DEPLOY,
    ("GET", D_ITEM): READ,
    ("DELETE", D_ITEM): DEPLOY,
    ("GET", D + "/events"): READ,
    ("GET", D + "/logs"): READ,
    ("GET", D + "/metrics"): READ,
    ("GET", D + "/releases"): READ,
    ("GET", D + "/releases/<int:number>"): READ,
    ("POST", D + "/restart"): DEPLOY,
    ("POST", D + "/scale"): DEPLOY,
    ("POST", D + "/stop"): DEPLOY,
    ("POST", D + "/rollback"): DEPLOY,
    ("GET", D + "/results"): Permission(Action.READ, key_scope=ApiKeyScope.RESULTS),
    ("POST", D + "/results"): Permission(Action.WRITE, key_scope=ApiKeyScope.RESULTS),
    ("POST", D + "/events"): Permission(Action.WRITE, key_scope=ApiKeyScope.RESULTS),
    ("GET", "/v1/deployments/metrics"): READ,
    ("GET", "/v1/deployments/alerts"): READ,
    # Alerts.
    ("GET", "/v1/alerts"): READ,
    ("POST", "/v1/alerts/<string:alert_id>/acknowledge"): WRITE,
    ("POST", "/v1/alerts/<string:alert_id>/resolve"): WRITE,
    # Evaluations (agent telemetry).
    ("GET", "/v1/evaluations"): Permission(Action.READ, key_scope=ApiKeyScope.TELEMETRY),
    ("POST", "/v1/evaluations"): Permission(Action.WRITE, key_scope=ApiKeyScope.TELEMETRY),
    ("GET", "/v1/evaluations/stats"): Permission(Action.READ, key_scope=ApiKeyScope.TELEMETRY),
    # Secrets.
    ("GET", "/v1/secrets"): READ,
    ("POST", "/v1/secrets"): WRITE,
    ("GET", "/v1/secrets/<string:secret_id>"): READ,
    ("PUT", "/v1/secrets/<string:secret_id>"): WRITE,
    ("DELETE", "/v1/secrets/<string:secret_id>"): WRITE,
    # Webhooks.
    ("GET", "/v1/webhooks"): READ,
    ("POST", "/v1/webhooks"): WRITE,
    ("GET", "/v1/webhooks/<string:webhook_id>"): READ,
    ("PATCH", "/v1/webhooks/<string:webhook_id>"): WRITE,
    ("DELETE", "/v1/webhooks/<string:webhook_id>"): WRITE,
    ("GET", "/v1/webhooks/<string:webhook_id>/deliveries"): READ,
    # Platform (routes of the event feed and system status, built beside this table).
    ("GET", "/v1/events"): READ,
    ("GET", "/v1/system/info"): Permission(Action.ACCOUNT),
    ("GET", "/v1/system/status"): ADMIN,
}
"""(method, Flask rule) → the route's permission. Every authenticated route has a row."""

PLANNED_ROUTES: frozenset[tuple[str, str]] = frozenset()
"""Rows for routes not served yet (none now): the table may hold them before the app serves them; every
route the app serves must have a row."""


def permission_for(method: str, rule: str) -> Permission | None:
    """The row of a route, or None when the table does not know it (the caller refuses)."""
    return PERMISSIONS.get((method, rule))
