"""A bounded load test: the service under gunicorn takes a sustained mixed load with no error.

wrk (Debian's package) drives `scripts/serve.sh` (migrations, then gunicorn with gunicorn.conf.py:
2 workers x 4 threads) on loopback for `LOAD_SECONDS` (default 60) at `LOAD_CONNECTIONS` (default 16),
with a dashboard's mix (bench/loadgen.py MIXED_WORKLOAD): a deployment by id, the list, its events,
the agents, health checks, and 3 requests in 20 a write (an evaluation posted with the agent's
key). Rate limiting stays on, with a limit the load cannot reach, so its cost is part of the figures.
It asserts that every request got a 2xx answer and no connection failed; throughput and latency are
printed (run `make load` to see them) and recorded in docs/performance.md, never asserted here.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.loadgen import MIXED_WORKLOAD, free_port, service_env, start_service, stop, wrk
from tests.helpers import ProcessGroup

pytestmark = pytest.mark.load

SECONDS = int(os.environ.get("LOAD_SECONDS", "60"))
CONNECTIONS = int(os.environ.get("LOAD_CONNECTIONS", "16"))


@pytest.fixture()
def load_service(database_url: str, tmp_path: Path, app: Any, processes: ProcessGroup) -> Any:
    """The service under gunicorn on the test database, in an engine namespace of its own."""
    port = free_port()
    env = service_env(
        port,
        database_url,
        ENGINE_NAMESPACE=f"load-{uuid.uuid4().hex[:8]}",
        RECONCILER_ENABLED="false",
        RATE_LIMIT_PER_MINUTE="100000000",
        SECRET_KEY="load-test-secret-" + "0123456789abcdef" * 4,
    )
    process = start_service(env, tmp_path / "gunicorn.log")
    processes.track(process)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_a_minute_of_mixed_load_gets_no_error(load_service: str) -> None:
    service = load_service
    http = requests.Session()
    credentials = {"email": f"load-{uuid.uuid4().hex[:6]}@example.com", "password": "load-test-password"}
    assert http.post(f"{service}/v1/auth/register", json=credentials).status_code == 201
    token = http.post(f"{service}/v1/auth/login", json=credentials).json()["access_token"]
    http.headers["Authorization"] = f"Bearer {token}"
    agents = [
        http.post(f"{service}/v1/agents", json={"name": f"load-{n}", "image": "deploy-test/http-agent:latest"})
        for n in range(20)
    ]
    assert all(response.status_code == 201 for response in agents)
    agent_id = agents[0].json()["id"]
    deployment = http.post(f"{service}/v1/agents/{agent_id}/deploy", json={"replicas": 2})
    assert deployment.status_code == 202
    key = http.post(f"{service}/v1/agents/{agent_id}/api-key", json={"scopes": ["telemetry"]}).json()["key"]

    result = wrk(
        f"{service}/health",
        seconds=SECONDS,
        connections=CONNECTIONS,
        script=MIXED_WORKLOAD,
        script_args=[token, deployment.json()["id"], key],
    )

    print(
        f"\nload: {SECONDS} s at {CONNECTIONS} connections: {result['requests']} requests, "
        f"{result['rps']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"{result['non_2xx']} non-2xx, {result['socket_errors']} socket errors"
    )
    assert result["requests"] > 0, result["output"]
    assert result["non_2xx"] == 0, result["output"]
    assert result["socket_errors"] == 0, result["output"]
    written = http.get(f"{service}/v1/evaluations/stats?agent_id={agent_id}&days=1").json()["total_evaluations"]
    assert written >= result["requests"] // 20 * 3 * 0.9  # the writes in the mix really landed
    assert http.delete(f"{service}/v1/deployments/{deployment.json()['id']}").status_code == 200
