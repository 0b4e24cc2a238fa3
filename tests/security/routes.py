"""The attack matrix's route table: every route of the app, classified once.

Each `Probe` is one request shape for a `(method, rule)` of the app's url_map: who may call it
(`access`), the path/body/query with `{placeholders}` for the ids of the victim's resources, and what a
stranger who names those ids gets (`other`). `test_route_table.py` fails when the app has a route (or
the OpenAPI spec an operation) that no probe classifies, so a new route cannot slip past the matrix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# Who may call a route.
PUBLIC = "public"  # no auth at all: health, docs, metrics, static assets
ANON = "anon"  # under /v1 but anonymous by design: register, login
USER = "user"  # an access JWT; an API key alone is refused with 403
USER_OR_KEY = "user_or_key"  # an access JWT, or the agent's own API key with the route's scope
REFRESH = "refresh"  # a refresh JWT
ADMIN = "admin"  # an admin's access JWT (the user routes): everyone else is 403

# What a stranger naming the victim's ids gets.
NOT_FOUND = "not_found"  # 404, byte-identical to a missing id
FORBIDDEN = "forbidden"  # 403 (admin/self routes), identical to a missing id
EMPTY = "empty"  # a list filter: 200 with no items, identical to a missing id

PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Probe:
    method: str
    rule: str
    access: str
    path: str = ""
    body: Any = None
    query: str = ""
    other: str | None = None
    """Set when the probe names the victim's resources: what a stranger gets."""
    key_scope: str | None = None
    tags: tuple[str, ...] = field(default=())
    """`idle_agent`: the owner's success needs an agent without a live deployment; `ready`: a ready deployment;
    `second_release`: a deployment whose release 1 was active and release 2 is now (a rollback has a target)."""
    ok: int = 200
    """What the owner (or, on a key route, the agent's own key) gets once the state allows the request."""

    @property
    def id(self) -> str:
        suffix = f"?{self.query}" if self.query else ""
        return f"{self.method} {self.path or self.rule}{suffix}"

    def placeholders(self) -> set[str]:
        text = self.path + self.query + json.dumps(self.body)
        return set(PLACEHOLDER.findall(text))

    def render(self, ids: dict[str, str]) -> tuple[str, Any]:
        """The URL and body with `{placeholders}` replaced by `ids`."""
        url = (self.path or self.rule).format(**ids)
        if self.query:
            url += "?" + self.query.format(**ids)
        return url, _fill(self.body, ids)


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {key: _fill(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, ids) for item in value]
    return value


A = "/v1/agents/<string:agent_id>"
D = "/v1/deployments/<string:deployment_id>"
# The item routes take the `id` converter (an id that is never a sibling route's literal word).
A_ITEM = "/v1/agents/<id:agent_id>"
D_ITEM = "/v1/deployments/<id:deployment_id>"
EVALUATION = {"agent_id": "{agent_id}", "prompt": "2+2?", "response": "4"}

PROBES: tuple[Probe, ...] = (
    # Public: health, docs, metrics and static files.
    Probe("GET", "/health", PUBLIC),
    Probe("GET", "/health/db", PUBLIC),
    Probe("GET", "/health/ready", PUBLIC),
    Probe("GET", "/metrics", PUBLIC),
    Probe("GET", "/openapi.json", PUBLIC),
    Probe("GET", "/docs", PUBLIC),
    Probe("GET", "/redoc", PUBLIC),
    Probe("GET", "/static/<path:filename>", PUBLIC, "/static/nothing.css"),
    Probe("GET", "/swagger-ui/<path:filename>", PUBLIC, "/swagger-ui/swagger-ui.css"),
    Probe("GET", "/redoc-ui/<path:filename>", PUBLIC, "/redoc-ui/logo-mini.svg"),
    # Accounts.
    Probe("POST", "/v1/auth/register", ANON, body={"email": "new@example.com", "password": "long-enough-pw"}),
    Probe("POST", "/v1/auth/login", ANON, body={"email": "nobody@example.com", "password": "whatever-pw"}),
    Probe("POST", "/v1/auth/refresh", REFRESH),
    Probe("POST", "/v1/auth/logout", USER),
    Probe("GET", "/v1/auth/me", USER),
    Probe("POST", "/v1/auth/api-keys", USER, body={"name": "ci"}, ok=201),
    Probe("GET", "/v1/auth/api-keys", USER),
    Probe("DELETE", "/v1/auth/api-keys/<string:token_id>", USER, "/v1/auth/api-keys/{token_id}", other=NOT_FOUND),
    Probe("GET", "/v1/users", ADMIN),
    Probe("GET", "/v1/users/<id:user_id>", ADMIN, "/v1/users/{user_id}", other=FORBIDDEN),
    Probe(
        "PATCH", "/v1/users/<id:user_id>", ADMIN, "/v1/users/{user_id}", body={"full_name": "Renamed"}, other=FORBIDDEN
    ),
    Probe(
        "GET",
        "/v1/users/<string:user_id>/deployed-agents",
        USER,
        "/v1/users/{user_id}/deployed-agents",
        other=FORBIDDEN,
    ),
    # Agents.
    Probe("GET", "/v1/agents", USER),
    Probe("GET", "/v1/agents", USER, query="owner_id={user_id}", other=FORBIDDEN, tags=("admin_filter",)),
    Probe("POST", "/v1/agents", USER, body={"name": "mine", "image": "deploy-test/http-agent:latest"}, ok=201),
    Probe("GET", A_ITEM, USER, "/v1/agents/{agent_id}", other=NOT_FOUND),
    Probe("PATCH", A_ITEM, USER, "/v1/agents/{agent_id}", body={"description": "taken over"}, other=NOT_FOUND),
    Probe("DELETE", A_ITEM, USER, "/v1/agents/{agent_id}", other=NOT_FOUND, tags=("idle_agent",), ok=204),
    Probe("GET", A + "/stats", USER, "/v1/agents/{agent_id}/stats", other=NOT_FOUND),
    Probe("GET", A + "/invocations", USER, "/v1/agents/{agent_id}/invocations", other=NOT_FOUND),
    Probe(
        "POST",
        A + "/interact",
        USER_OR_KEY,
        "/v1/agents/{agent_id}/interact",
        body={},
        other=NOT_FOUND,
        key_scope="invoke",
        ok=503,  # no replica answers in the attack matrix's world; tests/api/test_api_keys.py shows the 200
    ),
    Probe("POST", A + "/api-key", USER, "/v1/agents/{agent_id}/api-key", body={}, other=NOT_FOUND, ok=201),
    Probe("GET", A + "/api-keys", USER, "/v1/agents/{agent_id}/api-keys", other=NOT_FOUND),
    Probe("DELETE", A + "/api-keys/<string:key_id>", USER, "/v1/agents/{agent_id}/api-keys/{key_id}", other=NOT_FOUND),
    Probe(
        "POST",
        A + "/deploy",
        USER,
        "/v1/agents/{agent_id}/deploy",
        body={},
        other=NOT_FOUND,
        tags=("idle_agent",),
        ok=202,
    ),
    Probe(
        "POST",
        "/v1/agents/deploy",
        USER,
        body={"agent_id": "{agent_id}"},
        other=NOT_FOUND,
        tags=("idle_agent",),
        ok=202,
    ),
    Probe("POST", A + "/undeploy", USER, "/v1/agents/{agent_id}/undeploy", other=NOT_FOUND),
    Probe("POST", A + "/restart", USER, "/v1/agents/{agent_id}/restart", other=NOT_FOUND, tags=("ready",), ok=202),
    Probe("GET", A + "/deployment-status", USER, "/v1/agents/{agent_id}/deployment-status", other=NOT_FOUND),
    # Deployments.
    Probe("GET", "/v1/deployments", USER),
    Probe("GET", "/v1/deployments", USER, query="agent_id={agent_id}", other=EMPTY),
    Probe(
        "POST", "/v1/deployments", USER, body={"agent_id": "{agent_id}"}, other=NOT_FOUND, tags=("idle_agent",), ok=202
    ),
    Probe("GET", D_ITEM, USER, "/v1/deployments/{deployment_id}", other=NOT_FOUND),
    Probe("DELETE", D_ITEM, USER, "/v1/deployments/{deployment_id}", other=NOT_FOUND),
    Probe("GET", D + "/events", USER, "/v1/deployments/{deployment_id}/events", other=NOT_FOUND),
    Probe(
        "POST",
        D + "/events",
        USER_OR_KEY,
        "/v1/deployments/{deployment_id}/events",
        body={"message": "halfway there"},
        other=NOT_FOUND,
        key_scope="results",
        ok=201,
    ),
    Probe("GET", D + "/logs", USER, "/v1/deployments/{deployment_id}/logs", other=NOT_FOUND),
    Probe("GET", D + "/logs", USER, "/v1/deployments/{deployment_id}/logs", query="follow=true", other=NOT_FOUND),
    Probe("GET", D + "/metrics", USER, "/v1/deployments/{deployment_id}/metrics", other=NOT_FOUND),
    Probe(
        "POST",
        D + "/restart",
        USER,
        "/v1/deployments/{deployment_id}/restart",
        other=NOT_FOUND,
        tags=("ready",),
        ok=202,
    ),
    Probe(
        "POST",
        D + "/scale",
        USER,
        "/v1/deployments/{deployment_id}/scale",
        body={"replicas": 3},
        other=NOT_FOUND,
        tags=("ready",),
        ok=202,
    ),
    Probe("POST", D + "/stop", USER, "/v1/deployments/{deployment_id}/stop", other=NOT_FOUND, ok=202),
    Probe("GET", D + "/releases", USER, "/v1/deployments/{deployment_id}/releases", other=NOT_FOUND),
    Probe("GET", D + "/releases/<int:number>", USER, "/v1/deployments/{deployment_id}/releases/1", other=NOT_FOUND),
    Probe(
        "POST",
        D + "/rollback",
        USER,
        "/v1/deployments/{deployment_id}/rollback",
        body={"release": 1},
        other=NOT_FOUND,
        tags=("ready", "second_release"),
        ok=202,
    ),
    Probe(
        "GET",
        D + "/results",
        USER_OR_KEY,
        "/v1/deployments/{deployment_id}/results",
        other=NOT_FOUND,
        key_scope="results",
    ),
    Probe(
        "POST",
        D + "/results",
        USER_OR_KEY,
        "/v1/deployments/{deployment_id}/results",
        body={"results": "mine"},
        other=NOT_FOUND,
        key_scope="results",
        ok=201,
    ),
    Probe("GET", "/v1/deployments/metrics", USER),
    Probe("GET", "/v1/events", USER, query="deployment_id={deployment_id}", other=EMPTY),
    Probe("GET", "/v1/system/info", USER),
    Probe("GET", "/v1/system/status", ADMIN),
    Probe("GET", "/v1/deployments/alerts", USER),
    # Alerts.
    Probe("GET", "/v1/alerts", USER),
    Probe("GET", "/v1/alerts", USER, query="deployment_id={deployment_id}", other=EMPTY),
    Probe(
        "POST", "/v1/alerts/<string:alert_id>/acknowledge", USER, "/v1/alerts/{alert_id}/acknowledge", other=NOT_FOUND
    ),
    Probe("POST", "/v1/alerts/<string:alert_id>/resolve", USER, "/v1/alerts/{alert_id}/resolve", other=NOT_FOUND),
    # Evaluations.
    Probe("GET", "/v1/evaluations", USER_OR_KEY, key_scope="telemetry"),
    Probe("GET", "/v1/evaluations", USER_OR_KEY, query="agent_id={agent_id}", other=NOT_FOUND, key_scope="telemetry"),
    Probe("POST", "/v1/evaluations", USER_OR_KEY, body=EVALUATION, other=NOT_FOUND, key_scope="telemetry", ok=201),
    Probe("GET", "/v1/evaluations/stats", USER_OR_KEY, key_scope="telemetry"),
    Probe(
        "GET",
        "/v1/evaluations/stats",
        USER_OR_KEY,
        query="agent_id={agent_id}",
        other=NOT_FOUND,
        key_scope="telemetry",
    ),
    # Secrets.
    Probe("GET", "/v1/secrets", USER),
    Probe("POST", "/v1/secrets", USER, body={"name": "mine", "value": "v"}, ok=201),
    Probe("GET", "/v1/secrets/<string:secret_id>", USER, "/v1/secrets/{secret_id}", other=NOT_FOUND),
    Probe(
        "PUT",
        "/v1/secrets/<string:secret_id>",
        USER,
        "/v1/secrets/{secret_id}",
        body={"value": "rotated-by-someone"},
        other=NOT_FOUND,
    ),
    Probe("DELETE", "/v1/secrets/<string:secret_id>", USER, "/v1/secrets/{secret_id}", other=NOT_FOUND, ok=204),
    # Webhooks.
    Probe("GET", "/v1/webhooks", USER),
    Probe("POST", "/v1/webhooks", USER, body={"url": "http://127.0.0.1:9/hook"}, ok=201),
    Probe("GET", "/v1/webhooks/<string:webhook_id>", USER, "/v1/webhooks/{webhook_id}", other=NOT_FOUND),
    Probe(
        "PATCH",
        "/v1/webhooks/<string:webhook_id>",
        USER,
        "/v1/webhooks/{webhook_id}",
        body={"events": ["release.failed"]},
        other=NOT_FOUND,
    ),
    Probe("DELETE", "/v1/webhooks/<string:webhook_id>", USER, "/v1/webhooks/{webhook_id}", other=NOT_FOUND, ok=204),
    Probe(
        "GET",
        "/v1/webhooks/<string:webhook_id>/deliveries",
        USER,
        "/v1/webhooks/{webhook_id}/deliveries",
        other=NOT_FOUND,
    ),
)

PROTECTED = tuple(p for p in PROBES if p.access in (USER, USER_OR_KEY, REFRESH, ADMIN))
ACCESS_ROUTES = tuple(p for p in PROBES if p.access in (USER, USER_OR_KEY, ADMIN))
OPERATOR_ONLY = tuple(p for p in PROBES if p.access in (USER, ADMIN))
KEY_ROUTES = tuple(p for p in PROBES if p.access == USER_OR_KEY)
OWNED = tuple(p for p in PROBES if p.other is not None)


def ids(probes: tuple[Probe, ...]) -> list[str]:
    return [probe.id for probe in probes]
