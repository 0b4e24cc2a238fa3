"""A typed, synchronous client of Deploy Service's HTTP contract, on httpx.

`Client` sends one request per method and returns the contract's JSON body (a `dict`), or raises the
`errors` tree for an error body. With a refresh token it renews an expired access token itself: a 401 is
answered once by `POST /v1/auth/refresh` and the request sent again; the new token is handed to
`on_tokens` (deployctl stores it). Tokens are never logged, printed or put in an error.

Name lookups (`find_agent`, `find_deployment`) take a name or an id, as deployctl's arguments do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from deploy_client import sse
from deploy_client.errors import ApiError, ConnectionFailed, NotFound, error_from

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
USER_AGENT = "deployctl/0.1.0"
Json = dict[str, Any]


class Client:
    """One service, one credential.

    Args:
        base_url: the service's root URL (`http://localhost:5000`).
        token: an access token or a personal token (`Authorization: Bearer`).
        refresh_token: the login's refresh token, to renew `token` on a 401 (once per request).
        on_tokens: called with `(access_token, refresh_token)` after a refresh.
        transport: an httpx transport (tests pass `httpx.WSGITransport(app=...)`).
        timeout: seconds per request (a followed stream waits without a read timeout).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        refresh_token: str | None = None,
        on_tokens: Callable[[str, str | None], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._refresh_token = refresh_token
        self._on_tokens = on_tokens
        self._http = httpx.Client(
            base_url=self.base_url, transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, token={'***' if self._token else None})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def _headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(
                method, path, json=json, params=_present(params), headers={**self._headers(token), **(headers or {})}
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: httpx.TransportError) -> ConnectionFailed:
        return ConnectionFailed(0, "connection_failed", f"Cannot reach {self.base_url}: {exc}")

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        """Send a request with the current token (renewed once on a 401); the JSON body, or the response
        itself with `raw=True` (any status)."""
        response = self._send(method, path, json=json, params=params, headers=headers, token=self._token)
        if response.status_code == 401 and self._refresh_token and path != "/v1/auth/refresh":
            if self._renew():
                response = self._send(method, path, json=json, params=params, headers=headers, token=self._token)
        if raw:
            return response
        return _body(response)

    def _renew(self) -> bool:
        """A new access token from the refresh token; False when the login is over."""
        response = self._send("POST", "/v1/auth/refresh", token=self._refresh_token)
        if response.status_code != 200:
            return False
        self._token = response.json()["access_token"]
        if self._on_tokens and self._token:
            self._on_tokens(self._token, self._refresh_token)
        return True

    @contextmanager
    def _open(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """`method path` with its answer left open to read as it comes (no read timeout; renewed once on a 401)."""
        for attempt in (0, 1):
            try:
                with self._http.stream(
                    method,
                    path,
                    json=json,
                    params=_present(params),
                    headers={**self._headers(self._token), **(headers or {})},
                    timeout=httpx.Timeout(30.0, read=None),
                ) as response:
                    if response.status_code == 401 and attempt == 0 and self._refresh_token and self._renew():
                        continue
                    yield response
                    return
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None

    @contextmanager
    def stream(self, path: str, *, params: dict[str, Any] | None = None) -> Iterator[Iterator[sse.Event]]:
        """`GET path` as an event stream: the events as they come (an error answer raises before)."""
        with self._open("GET", path, params=params) as response:
            if response.status_code >= 400:
                response.read()
                _body(response)
            yield sse.parse(response.iter_lines())

    # -- auth -------------------------------------------------------------------------------------

    def login(self, email: str, password: str) -> Json:
        """Log in; the client then uses the new tokens (returned as the contract's token body)."""
        body: Json = _body(self._send("POST", "/v1/auth/login", json={"email": email, "password": password}))
        self._token, self._refresh_token = body["access_token"], body.get("refresh_token")
        return body

    def logout(self) -> Json:
        result: Json = self.request("POST", "/v1/auth/logout")
        self._token = self._refresh_token = None
        return result

    def me(self) -> Json:
        result: Json = self.request("GET", "/v1/auth/me")
        return result

    # -- agents ------------------------------------------------------------------------------------

    def list_agents(self, *, q: str | None = None, status: str | None = None, skip: int = 0, limit: int = 50) -> Json:
        result: Json = self.request(
            "GET", "/v1/agents", params={"q": q, "status": status, "skip": skip, "limit": limit}
        )
        return result

    def all_agents(self, *, q: str | None = None) -> list[Json]:
        """Every agent the caller sees (matching `q`), page after page."""
        return self._all("/v1/agents", {"q": q})

    def get_agent(self, agent_id: str) -> Json:
        result: Json = self.request("GET", f"/v1/agents/{agent_id}")
        return result

    def create_agent(self, spec: Json) -> Json:
        result: Json = self.request("POST", "/v1/agents", json=spec)
        return result

    def update_agent(self, agent_id: str, fields: Json) -> Json:
        result: Json = self.request("PATCH", f"/v1/agents/{agent_id}", json=fields)
        return result

    def delete_agent(self, agent_id: str) -> None:
        self.request("DELETE", f"/v1/agents/{agent_id}")

    def agent_by_name(self, name: str) -> Json | None:
        """The agent named exactly `name`, None if none. Raises `ApiError` when the name is ambiguous (an
        admin sees several owners' agents of that name)."""
        matches = [agent for agent in self.all_agents(q=name) if agent["name"] == name]
        if len(matches) > 1:
            ids = ", ".join(agent["id"] for agent in matches)
            raise ApiError(0, "ambiguous", f"Several agents are named {name!r} ({ids}): give an id.")
        return matches[0] if matches else None

    def find_agent(self, ref: str) -> Json:
        """The agent `ref` names: an id, else a name. Raises `NotFound`."""
        if UUID.match(ref):
            try:
                return self.get_agent(ref)
            except NotFound:
                pass
        agent = self.agent_by_name(ref)
        if agent is None:
            raise NotFound(404, "not_found", f"No agent named or with the id {ref!r}.")
        return agent

    # -- deployments -------------------------------------------------------------------------------

    def deploy(self, agent_id: str, *, replicas: int | None = None) -> Json:
        body = {"replicas": replicas} if replicas is not None else {}
        result: Json = self.request("POST", f"/v1/agents/{agent_id}/deploy", json=body)
        return result

    def list_deployments(
        self, *, agent_id: str | None = None, status: str | None = None, skip: int = 0, limit: int = 50
    ) -> Json:
        params = {"agent_id": agent_id, "status": status, "skip": skip, "limit": limit}
        result: Json = self.request("GET", "/v1/deployments", params=params)
        return result

    def get_deployment(self, deployment_id: str) -> Json:
        result: Json = self.request("GET", f"/v1/deployments/{deployment_id}")
        return result

    def find_deployment(self, ref: str) -> Json:
        """The deployment `ref` names: its id, else the live (or latest) deployment of the agent `ref` names."""
        if UUID.match(ref):
            try:
                return self.get_deployment(ref)
            except NotFound:
                pass
        agent = self.find_agent(ref)
        try:
            status: Json = self.request("GET", f"/v1/agents/{agent['id']}/deployment-status")
        except NotFound:
            raise NotFound(404, "not_found", f"Agent {agent['name']!r} was never deployed.") from None
        return self.get_deployment(status["deployment_id"])

    def _action(self, deployment_id: str, action: str, body: Json | None = None) -> Json:
        result: Json = self.request("POST", f"/v1/deployments/{deployment_id}/{action}", json=body or {})
        return result

    def scale(self, deployment_id: str, replicas: int) -> Json:
        return self._action(deployment_id, "scale", {"replicas": replicas})

    def restart(self, deployment_id: str) -> Json:
        return self._action(deployment_id, "restart")

    def stop(self, deployment_id: str) -> Json:
        return self._action(deployment_id, "stop")

    def rollback(self, deployment_id: str, *, release: int | None = None) -> Json:
        return self._action(deployment_id, "rollback", {"release": release} if release is not None else {})

    def delete_deployment(self, deployment_id: str) -> Json:
        result: Json = self.request("DELETE", f"/v1/deployments/{deployment_id}")
        return result

    def events(self, deployment_id: str, *, event_type: str | None = None, skip: int = 0, limit: int = 50) -> Json:
        params = {"event_type": event_type, "skip": skip, "limit": limit}
        result: Json = self.request("GET", f"/v1/deployments/{deployment_id}/events", params=params)
        return result

    def feed(
        self,
        *,
        event_type: str | None = None,
        agent_id: str | None = None,
        since: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> Json:
        """Every event the caller may see, across deployments, newest first (`next_before` pages on)."""
        params = {"event_type": event_type, "agent_id": agent_id, "since": since, "before": before, "limit": limit}
        result: Json = self.request("GET", "/v1/events", params=params)
        return result

    def logs(
        self,
        deployment_id: str,
        *,
        tail: int | None = None,
        replica: int | None = None,
        source: str | None = None,
        previous: bool = False,
    ) -> Json:
        params = {"tail": tail, "replica": replica, "source": source, "previous": "true" if previous else None}
        result: Json = self.request("GET", f"/v1/deployments/{deployment_id}/logs", params=params)
        return result

    @contextmanager
    def follow_logs(
        self, deployment_id: str, *, tail: int | None = None, replica: int | None = None, source: str | None = None
    ) -> Iterator[Iterator[sse.Event]]:
        """The log lines as they come (`follow=true`): `Event(None, line)`, then `Event("end", {status})`."""
        params = {"follow": "true", "tail": tail, "replica": replica, "source": source}
        with self.stream(f"/v1/deployments/{deployment_id}/logs", params=params) as events:
            yield events

    def metrics(self, deployment_id: str) -> Json:
        result: Json = self.request("GET", f"/v1/deployments/{deployment_id}/metrics")
        return result

    def releases(self, deployment_id: str, *, skip: int = 0, limit: int = 50) -> Json:
        params = {"skip": skip, "limit": limit}
        result: Json = self.request("GET", f"/v1/deployments/{deployment_id}/releases", params=params)
        return result

    def release(self, deployment_id: str, number: int) -> Json:
        result: Json = self.request("GET", f"/v1/deployments/{deployment_id}/releases/{number}")
        return result

    def system_metrics(self) -> Json:
        result: Json = self.request("GET", "/v1/deployments/metrics")
        return result

    # -- interact, keys, secrets, alerts -------------------------------------------------------------

    def interact(self, agent_id: str, data: Any, *, session: str | None = None) -> tuple[int, Any]:
        """Send `data` to the agent: its status code and JSON answer (an error of the service raises).

        `session` is sent as `X-Session-Id`: calls with the same one reach the same replica while it is ready.
        """
        response: httpx.Response = self.request(
            "POST", f"/v1/agents/{agent_id}/interact", json=data, headers=_session(session), raw=True
        )
        body = _json(response)
        if response.status_code >= 400 and isinstance(body, dict) and body.get("success") is False:
            raise error_from(response.status_code, body, retry_after=response.headers.get("Retry-After"))
        return response.status_code, body

    @contextmanager
    def interact_stream(
        self, agent_id: str, data: Any, *, session: str | None = None
    ) -> Iterator[tuple[int, str, Iterator[str]]]:
        """Send `data` asking for a streamed answer: `(status, content type, its text as it comes)`.

        The agent's own stream (server-sent events or chunks) is passed on unchanged; an agent that answers
        plain JSON comes as one piece. An error of the service itself (the contract's error body) raises.
        """
        headers = {"Accept": "text/event-stream", **_session(session)}
        with self._open("POST", f"/v1/agents/{agent_id}/interact", json=data, headers=headers) as response:
            content_type = response.headers.get("Content-Type", "")
            if response.status_code >= 400 and content_type.startswith("application/json"):
                response.read()
                body = _json(response)
                if isinstance(body, dict) and body.get("success") is False:
                    raise error_from(response.status_code, body, retry_after=response.headers.get("Retry-After"))
            yield response.status_code, content_type, response.iter_text()

    def create_key(
        self,
        agent_id: str,
        *,
        name: str | None = None,
        expires_in_days: int | None = None,
        scopes: list[str] | None = None,
    ) -> Json:
        body = {k: v for k, v in {"name": name, "expires_in_days": expires_in_days, "scopes": scopes}.items() if v}
        result: Json = self.request("POST", f"/v1/agents/{agent_id}/api-key", json=body)
        return result

    def list_keys(self, agent_id: str) -> Json:
        result: Json = self.request("GET", f"/v1/agents/{agent_id}/api-keys", params={"limit": 200})
        return result

    def revoke_key(self, agent_id: str, key_id: str) -> Json:
        result: Json = self.request("DELETE", f"/v1/agents/{agent_id}/api-keys/{key_id}")
        return result

    def create_secret(self, name: str, value: str) -> Json:
        result: Json = self.request("POST", "/v1/secrets", json={"name": name, "value": value})
        return result

    def rotate_secret(self, secret_id: str, value: str) -> Json:
        """A new value for a stored secret: used from each referencing agent's next start (`used_by`)."""
        result: Json = self.request("PUT", f"/v1/secrets/{secret_id}", json={"value": value})
        return result

    def list_secrets(self) -> list[Json]:
        return self._all("/v1/secrets", {})

    def delete_secret(self, secret_id: str) -> None:
        self.request("DELETE", f"/v1/secrets/{secret_id}")

    # -- personal tokens ---------------------------------------------------------------------------

    def create_token(self, name: str, *, scopes: list[str] | None = None, expires_in_days: int | None = None) -> Json:
        """A personal access token (`dsp_...`): the body shows the token this once."""
        body: Json = {"name": name}
        if scopes:
            body["scopes"] = scopes
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        result: Json = self.request("POST", "/v1/auth/api-keys", json=body)
        return result

    def list_tokens(self) -> list[Json]:
        return self._all("/v1/auth/api-keys", {})

    def revoke_token(self, token_id: str) -> Json:
        result: Json = self.request("DELETE", f"/v1/auth/api-keys/{token_id}")
        return result

    def list_alerts(
        self,
        *,
        status: str | None = None,
        severity: str | None = None,
        deployment_id: str | None = None,
        limit: int = 50,
    ) -> Json:
        params = {"status": status, "severity": severity, "deployment_id": deployment_id, "limit": limit}
        result: Json = self.request("GET", "/v1/alerts", params=params)
        return result

    def acknowledge_alert(self, alert_id: str) -> Json:
        result: Json = self.request("POST", f"/v1/alerts/{alert_id}/acknowledge")
        return result

    def resolve_alert(self, alert_id: str) -> Json:
        result: Json = self.request("POST", f"/v1/alerts/{alert_id}/resolve")
        return result

    def _all(self, path: str, params: dict[str, Any]) -> list[Json]:
        items: list[Json] = []
        while True:
            page: Json = self.request("GET", path, params={**params, "skip": len(items), "limit": 200})
            items.extend(page["items"])
            if not page["items"] or len(items) >= page["total"]:
                return items


def _present(params: dict[str, Any] | None) -> dict[str, Any]:
    """The query without its unset (None) parameters."""
    return {k: v for k, v in (params or {}).items() if v is not None}


def _session(session: str | None) -> dict[str, str]:
    return {"X-Session-Id": session} if session else {}


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _body(response: httpx.Response) -> Any:
    """The JSON body of a success; the error tree's exception for anything else."""
    body = _json(response)
    if response.status_code >= 400:
        raise error_from(response.status_code, body, retry_after=response.headers.get("Retry-After"))
    return body
