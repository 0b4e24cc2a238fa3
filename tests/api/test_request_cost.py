"""Every request pays only for what it uses (issue 15).

Measured by what runs, not by the clock: the Python calls one request makes, counted by cProfile, are
the same on a busy machine as on a quiet one. The limiter is process-wide, so the limited app here is
bound the way tests/security/test_rate_limit_buckets.py binds it, and left disabled afterwards.
"""

from __future__ import annotations

import cProfile
import pstats
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient

from deploy_service.extensions import db
from deploy_service.models.heartbeat import CheckStatus
from deploy_service.observability import HTTP_LATENCY, HTTP_REQUESTS
from deploy_service.ratelimit import limiter
from deploy_service.schemas.common import MAX_PAGE_LIMIT
from deploy_service.schemas.health import LivenessSchema
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from tests.factories import AuthActions
from tests.fakes import FakeRunner

EXEMPT_PATHS = ("/health", "/health/db", "/openapi.json", "/metrics")
CALL_BUDGET = 80
"""Python calls `GET /health` may make beyond what Flask's hello world makes for the same request."""


@pytest.fixture()
def limited_app(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """An app as production runs it: rate limiting on (memory storage, a limit no test reaches)."""
    monkeypatch.setattr(limiter, "enabled", limiter.enabled)
    app = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_PER_MINUTE=1_000_000, AUTH_RATE_LIMIT_PER_MINUTE=1_000_000)
    app.extensions[RUNNER_KEY] = FakeRunner()
    limiter.reset()
    yield app
    limiter.reset()
    with app.app_context():
        db.engine.dispose()


def _calls(client: FlaskClient, path: str, **kwargs: Any) -> dict[tuple[str, str], int]:
    """(file, function) → calls made by one request of `path` (after a first one has warmed every cache)."""
    assert client.get(path, **kwargs).status_code == 200
    profiler = cProfile.Profile()
    profiler.enable()
    response = client.get(path, **kwargs)
    profiler.disable()
    assert response.status_code == 200
    counts: Counter[tuple[str, str]] = Counter()
    for (filename, _line, function), (_primitive, calls, *_rest) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        counts[(filename, function)] += calls
    return counts


def _in(counts: dict[tuple[str, str], int], fragment: str) -> dict[tuple[str, str], int]:
    return {key: calls for key, calls in counts.items() if fragment in key[0]}


@pytest.mark.parametrize("path", EXEMPT_PATHS)
def test_routes_outside_v1_never_reach_the_rate_limiter(limited_app: Flask, path: str) -> None:
    assert _in(_calls(limited_app.test_client(), path), "flask_limiter") == {}


@pytest.mark.parametrize("path", EXEMPT_PATHS)
def test_no_request_does_session_work(limited_app: Flask, path: str) -> None:
    client = limited_app.test_client()
    client.set_cookie("session", "eyJhIjoxfQ.garbage.signature")
    assert _in(_calls(client, path), "flask/sessions.py") == {}


def test_health_answers_what_its_schema_dumps(client: FlaskClient) -> None:
    """`GET /health` builds its body itself (no per-request dump): it must be what the schema would make."""
    body = client.get("/health").get_json()
    assert set(body) == set(LivenessSchema().fields)
    assert LivenessSchema().dump({**body, "status": CheckStatus(body["status"])}) == body


def test_health_costs_little_more_than_flask_hello_world(limited_app: Flask) -> None:
    bare = Flask("bare")
    bare.get("/health")(lambda: jsonify(status="ok"))
    ours = sum(_calls(limited_app.test_client(), "/health").values())
    hello = sum(_calls(bare.test_client(), "/health").values())
    assert ours - hello <= CALL_BUDGET, f"GET /health makes {ours - hello} Python calls more than hello world"


class _CountingStorage:
    """Counts the limiter's calls to its storage (each is a round trip with Redis); not the memory
    storage's calls to itself (its `incr` reads the key through `get`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self._depth = 0
        storage = limiter.storage
        for name in ("incr", "get", "get_expiry", "clear", "get_moving_window", "acquire_entry"):
            original = getattr(storage, name)
            monkeypatch.setattr(storage, name, self._counted(name, original))

    def _counted(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if not self._depth:
                self.calls.append(name)
            self._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted


def test_a_limited_request_makes_one_storage_call(
    limited_app: Flask, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, headers = auth.user()
    client = limited_app.test_client()
    storage = _CountingStorage(monkeypatch)
    for expected_remaining in (1_000_000 - 1, 1_000_000 - 2):
        storage.calls.clear()
        response = client.get("/v1/agents", headers=headers)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Remaining"] == str(expected_remaining)
        assert 0 < int(response.headers["Retry-After"]) <= 60
        assert storage.calls == ["incr"]


def test_metric_label_children_are_made_once_per_route_and_status(
    limited_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = limited_app.test_client()
    client.get("/health")
    made: list[tuple[str, ...]] = []
    for metric in (HTTP_REQUESTS, HTTP_LATENCY):
        labels = metric.labels
        monkeypatch.setattr(metric, "labels", lambda *values, _labels=labels: made.append(values) or _labels(*values))
    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert made == []


def test_a_limited_request_is_one_check_of_its_one_limit(limited_app: Flask, auth: AuthActions) -> None:
    """flask-limiter's general check resolves application, meta, blueprint and decorated limits and their
    exemptions on every request; a /v1 route has its default limit only, which is hit directly."""
    _, headers = auth.user()
    calls = _calls(limited_app.test_client(), "/v1/agents", headers=headers)
    assert _in(calls, "flask_limiter/_manager.py") == {}
    assert [name for (_file, name) in _in(calls, "deploy_service/ratelimit.py")].count("caller_key") == 1


def test_a_limited_request_makes_no_flask_limiter_context(limited_app: Flask, auth: AuthActions) -> None:
    """The default limit's headers come from the hit this request made, not from flask-limiter's
    per-request context; a decorated limit (login) still goes flask-limiter's way and gets its headers."""
    user, headers = auth.user()
    client = limited_app.test_client()
    calls = _calls(client, "/v1/agents", headers=headers)
    assert [name for (_file, name) in _in(calls, "flask_limiter/_extension.py")].count("context") == 0
    response = client.get("/v1/agents", headers=headers)
    assert response.headers["X-RateLimit-Limit"] == "1000000"
    assert int(response.headers["X-RateLimit-Reset"]) > 0
    login = client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert login.status_code == 200
    assert login.headers["X-RateLimit-Limit"] == "1000000"
    assert 0 < int(login.headers["Retry-After"]) <= 60


def test_query_arguments_are_parsed_once_per_query_string(limited_app: Flask, auth: AuthActions) -> None:
    """A polled page's `?limit=50` is loaded by marshmallow once; each request still gets its own arguments,
    and an invalid query string is refused every time."""
    _, headers = auth.user()
    client = limited_app.test_client()
    path = f"/v1/deployments?limit={MAX_PAGE_LIMIT + 50}&skip=0"  # clamped to the maximum by the schema's post_load
    first = client.get(path, headers=headers)
    calls = _calls(client, path, headers=headers)
    assert _in(calls, "marshmallow/schema.py") == {}
    assert client.get(path, headers=headers).get_json()["limit"] == first.get_json()["limit"] == MAX_PAGE_LIMIT
    assert client.get("/v1/deployments?limit=5", headers=headers).get_json()["limit"] == 5
    for _ in range(2):
        refused = client.get("/v1/deployments?limit=0", headers=headers)
        assert refused.status_code == 400 and refused.get_json()["error"] == "validation_error"
