"""A writer process of the SQLite contention test (its own module, so `spawn` can import it).

Each process builds its own app on the shared SQLite file and makes its writes as HTTP requests
through the app (the real request handling, transaction per request), alternating two write paths:
creating an agent (a read of the owner's names, then an insert) and posting an evaluation (a read of
the agent, then an insert). Every answer that is not 201 is reported back to the test.
"""

from __future__ import annotations

from typing import Any

from deploy_service import create_app
from tests.conftest import TEST_CONFIG


def write(
    database_url: str, token: str, agent_id: str, worker: int, count: int, ready: Any, go: Any, results: Any
) -> None:
    """Build an app, say so on `ready`, make `count` writes once `go` is set; put `(worker, failures)` on `results`."""
    # One user makes hundreds of agents here: past QUOTA_AGENTS's default, which is not what is measured.
    config = {**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url, "LOG_LEVEL": "WARNING", "QUOTA_AGENTS": 100_000}
    app = create_app(config)
    client = app.test_client()
    ready.put(worker)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[Any] = []
    go.wait(60)
    for number in range(count):
        try:
            if number % 2:
                body = {"agent_id": agent_id, "prompt": f"w{worker}-{number}", "response": "ok", "latency_sec": 0.1}
                response = client.post("/v1/evaluations", headers=headers, json=body)
            else:
                body = {"name": f"w{worker}-{number}", "image": "deploy-test/http-agent:latest"}
                response = client.post("/v1/agents", headers=headers, json=body)
            if response.status_code != 201:
                failures.append((number, response.status_code, response.get_json()))
        except Exception as exc:  # noqa: BLE001 - reported to the test, whatever it is
            failures.append((number, type(exc).__name__, str(exc)))
    results.put((worker, failures))
