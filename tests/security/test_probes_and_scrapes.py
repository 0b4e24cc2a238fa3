"""The unauthenticated routes an orchestrator and a scraper call: what they cost and what they show.

`/health/ready` is open to anyone who reaches the service, so a flood of it must not become a flood
of engine calls (the ping is reused for `HEALTH_ENGINE_CACHE_SECONDS`), and its engine check shows
what the contract asks for (ok or not, and why), not the registry or the Swarm's shape. `/metrics`
takes `METRICS_TOKEN` as a bearer token when one is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from deploy_service.reconciler import Reconciler
from deploy_service.settings import Settings
from tests.fakes import FakeRunner
from tests.helpers import assert_error

TOKEN = "metrics-token-0123456789abcdef"


def _pings(fake_runner: FakeRunner) -> int:
    return fake_runner.calls.count("ping")


def test_a_flood_of_readiness_probes_pings_the_engine_once_per_period(
    client: FlaskClient, fake_runner: FakeRunner, reconciler: Reconciler, configure: Callable[..., Settings]
) -> None:
    configure(HEALTH_ENGINE_CACHE_SECONDS=60)
    reconciler.run_once()
    before = _pings(fake_runner)
    for _ in range(25):
        assert client.get("/health/ready").status_code == 200
    fake_runner.down = True  # within the period, the cached ping still answers
    assert client.get("/health/ready").status_code == 200
    assert _pings(fake_runner) - before == 1
    configure(HEALTH_ENGINE_CACHE_SECONDS=0.05)
    time.sleep(0.1)  # the period is over: the next probe pings again, and sees the engine down
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.get_json()["checks"]["engine"]["status"] == "error"
    assert _pings(fake_runner) - before == 2


def test_with_no_cache_every_probe_pings(
    client: FlaskClient, fake_runner: FakeRunner, configure: Callable[..., Settings]
) -> None:
    configure(HEALTH_ENGINE_CACHE_SECONDS=0)
    before = _pings(fake_runner)
    for _ in range(3):
        client.get("/health/ready")
    assert _pings(fake_runner) - before == 3


def test_readiness_shows_no_registry_or_swarm_details(
    client: FlaskClient, fake_runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    swarm = {
        "swarm": {
            "node_state": "active",
            "manager": True,
            "nodes": 7,
            "managers": 3,
            "registry": "registry.internal.example:5000",
        }
    }
    monkeypatch.setattr(fake_runner, "describe", lambda: swarm, raising=False)
    response = client.get("/health/ready")
    engine = response.get_json()["checks"]["engine"]
    assert set(engine) == {"status", "runner", "latency_ms"}, engine
    assert "registry.internal" not in response.get_data(as_text=True)


def test_metrics_are_open_without_a_token(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200 and "http_requests_total" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN],
)
def test_metrics_need_the_token_when_one_is_set(
    client: FlaskClient, configure: Callable[..., Settings], authorization: str | None
) -> None:
    configure(METRICS_TOKEN=TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    error = assert_error(response, 401, "unauthorized")
    assert "http_requests_total" not in str(error)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert_error(client.get(f"/metrics?token={TOKEN}"), 401, "unauthorized")


def test_metrics_answer_the_token(client: FlaskClient, configure: Callable[..., Settings]) -> None:
    configure(METRICS_TOKEN=TOKEN)
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and "http_requests_total" in response.get_data(as_text=True)
    assert client.get("/metrics", headers={"Authorization": f"bearer  {TOKEN} "}).status_code == 200


def test_made_up_methods_and_paths_add_no_metric_series(client: FlaskClient) -> None:
    """The attack: requests with invented methods (`FOO1`, `FOO2`, ...) or paths, each a new label value,
    grow every process's metrics (and the multiprocess files) without bound. Unknown methods count as
    `other`; unmatched paths as `unmatched`."""
    for n in range(20):
        client.open(f"/no/such/path/{n}", method=f"FOO{n}")
        client.open(f"/v1/agents/{n}", method=f"BAR{n}")
    text = client.get("/metrics").get_data(as_text=True)
    series = [line for line in text.splitlines() if line.startswith("http_requests_total{")]
    assert not [line for line in series if 'method="FOO' in line or 'method="BAR' in line]
    assert any('method="other"' in line and 'route="unmatched"' in line for line in series)
