"""No response and no log line ever holds a secret value, an API key, a password, a hash or a token.

One realistic flow — register, log in, store a secret, create an agent that uses it, deploy it (the
in-memory runner, converged by the real reconciler), issue an API key, call the agent and report with
the key, fail in the usual ways, hit a database error, log out — runs with every logger captured at
DEBUG (pytest's caplog and a handler of our own on the root logger). Then every response body and
header, every log line (with tracebacks) and every database row is searched for the sensitive values.
The only exceptions are the responses whose purpose is to hand one out: the login and refresh answers
(tokens), the 201 that shows a new API key once, and the 201 that shows a webhook's signing secret once.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from deploy_service.extensions import db
from deploy_service.models import ApiKey, User
from deploy_service.reconciler import Reconciler
from deploy_service.settings import Settings
from tests.fakes import FakeRunner
from tests.helpers import FAST, converge


class Capture(logging.Handler):
    """Every record, formatted with its traceback and with the raw arguments too."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        self.lines.append(f"{text} {record.args!r}")


@pytest.fixture()
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[Capture]:
    caplog.set_level(logging.DEBUG)
    handler = Capture()
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


class Recorder:
    """A client that keeps every response, labelled, for the leak search."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.responses: list[tuple[str, int, str, str]] = []

    def call(self, label: str, method: str, url: str, **kwargs: Any) -> Any:
        response = self.client.open(url, method=method, **kwargs)
        body = response.get_data(as_text=True)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.responses.append((label, response.status_code, body, headers))
        return response


ISSUERS = {"login", "refresh", "create key", "create webhook"}


def test_no_secret_reaches_a_response_a_log_line_or_a_table(
    app: Flask,
    client: FlaskClient,
    fake_runner: FakeRunner,
    captured: Capture,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Settings],
) -> None:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
    reconciler = Reconciler(app, runner=fake_runner, settings=FAST)
    started_envs: list[dict[str, str]] = []
    fake_runner.on_start = lambda spec: started_envs.append(dict(spec.env))
    api = Recorder(client)
    password = "pw-" + secrets.token_urlsafe(16)
    secret_value = "sv-" + secrets.token_urlsafe(24)
    email = f"leak-{secrets.token_hex(4)}@example.com"
    try:
        api.call("register", "POST", "/v1/auth/register", json={"email": email, "password": password})
        tokens = api.call("login", "POST", "/v1/auth/login", json={"email": email, "password": password}).get_json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        refreshed = api.call(
            "refresh", "POST", "/v1/auth/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
        ).get_json()["access_token"]
        api.call("me", "GET", "/v1/auth/me", headers=auth)
        api.call("secret", "POST", "/v1/secrets", headers=auth, json={"name": "llm-key", "value": secret_value})
        api.call("secret again", "POST", "/v1/secrets", headers=auth, json={"name": "llm-key", "value": secret_value})
        api.call("bad secret", "POST", "/v1/secrets", headers=auth, json={"name": "-bad", "value": secret_value})
        api.call("secrets", "GET", "/v1/secrets", headers=auth)
        agent = api.call(
            "agent",
            "POST",
            "/v1/agents",
            headers=auth,
            json={"name": "leaky", "image": "deploy-test/http-agent:latest", "secrets": {"LLM_KEY": "llm-key"}},
        ).get_json()
        api.call(
            "bad agent",
            "POST",
            "/v1/agents",
            headers=auth,
            json={"name": "leaky2", "image": "x:1", "env": {"X": secret_value}, "secrets": {"X": "llm-key"}},
        )
        deployment = api.call(
            "deploy", "POST", f"/v1/agents/{agent['id']}/deploy", headers=auth, json={"replicas": 2}
        ).get_json()
        dep = f"/v1/deployments/{deployment['id']}"

        def ready() -> bool:
            return bool(client.get(dep, headers=auth).get_json()["status"] == "ready")

        converge(reconciler, ready)
        for label, url in [
            ("deployment", dep),
            ("deployments", "/v1/deployments"),
            ("events", f"{dep}/events?limit=200"),
            ("logs", f"{dep}/logs"),
            ("build logs", f"{dep}/logs?source=build"),
            ("metrics", f"{dep}/metrics"),
            ("status", f"/v1/agents/{agent['id']}/deployment-status"),
            ("agent", f"/v1/agents/{agent['id']}"),
            ("stats", f"/v1/agents/{agent['id']}/stats"),
            ("system", "/v1/deployments/metrics"),
        ]:
            api.call(label, "GET", url, headers=auth)
        created = api.call("create key", "POST", f"/v1/agents/{agent['id']}/api-key", headers=auth, json={}).get_json()
        key = created["key"]
        api.call("keys", "GET", f"/v1/agents/{agent['id']}/api-keys", headers=auth)
        with_key = {"X-API-Key": key}
        api.call("interact", "POST", f"/v1/agents/{agent['id']}/interact", headers=with_key, json={"q": "hi"})
        api.call("evaluation", "POST", "/v1/evaluations", headers=with_key, json={"prompt": "2+2?", "response": "4"})
        api.call("result", "POST", f"{dep}/results", headers=with_key, json={"results": {"ok": True}})
        api.call("create webhook", "POST", "/v1/webhooks", headers=auth, json={"url": "http://127.0.0.1:9/hook"})
        api.call("wrong password", "POST", "/v1/auth/login", json={"email": email, "password": password + "x"})
        api.call("key as bearer", "GET", "/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
        api.call("key on operator route", "GET", "/v1/agents", headers=with_key)
        api.call("token as key", "POST", "/v1/evaluations", headers={"X-API-Key": tokens["access_token"]}, json={})

        # A database error while issuing a key: the failed INSERT's parameters include the key's hash.
        monkeypatch.setattr("deploy_service.services.api_keys.generate_api_key", lambda: key)
        failed = api.call("duplicate key", "POST", f"/v1/agents/{agent['id']}/api-key", headers=auth, json={})
        assert failed.status_code == 500
        monkeypatch.undo()
        configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)

        api.call("revoke", "DELETE", f"/v1/agents/{agent['id']}/api-keys/{created['id']}", headers=auth)
        api.call("revoked key", "POST", f"/v1/agents/{agent['id']}/interact", headers=with_key, json={})
        api.call("undeploy", "POST", f"/v1/agents/{agent['id']}/undeploy", headers=auth)
        converge(reconciler, lambda: not fake_runner.containers)
        api.call("logout", "POST", "/v1/auth/logout", headers=auth)
        api.call("after logout", "GET", "/v1/auth/me", headers=auth)
    finally:
        reconciler.close()

    with app.app_context():
        password_hash = db.session.scalar(select(User.password_hash).where(User.email == email))
        key_hash = db.session.scalar(select(ApiKey.key_hash).where(ApiKey.id == created["id"]))
        rows = [
            repr(tuple(row))
            for table in db.metadata.sorted_tables
            for row in db.session.execute(text(f"SELECT * FROM {table.name}"))  # noqa: S608 - our own table names
        ]
    assert password_hash and key_hash
    sensitive = {
        "the password": password,
        "the secret value": secret_value,
        "the API key": key,
        "the key's random part": key[12:],
        "the password hash": password_hash,
        "the key hash": key_hash,
        "the access token": tokens["access_token"],
        "the refresh token": tokens["refresh_token"],
        "the refreshed access token": refreshed,
    }

    # The controls: the secret really reached the replicas, and log capture really works.
    assert len(started_envs) == 2 and all(env["LLM_KEY"] == secret_value for env in started_envs)
    assert any("unhandled database error: " in line and "INSERT INTO api_keys" in line for line in captured.lines)
    assert len(captured.lines) >= len(caplog.records) > 0

    leaks = []
    for label, status, body, headers in api.responses:
        if label in ISSUERS:
            continue
        for name, value in sensitive.items():
            if value in body or value in headers:
                leaks.append(f"response {label!r} ({status}) holds {name}")
    for line in captured.lines + [caplog.text]:
        for name, value in sensitive.items():
            if value in line:
                leaks.append(f"log line holds {name}: {line[:300]}")
    for row in rows:
        for name in ("the password", "the secret value", "the API key", "the key's random part"):
            if sensitive[name] in row:
                leaks.append(f"a database row holds {name} in clear: {row[:200]}")
    assert leaks == []
