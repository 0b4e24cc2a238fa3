"""Benchmark: API throughput under gunicorn, as ratios measured in one run.

Run by hand on a machine with an engine and the test images (`scripts/ensure_docker.sh`,
`tests/integration/images/build.sh`); it installs Debian's `wrk` when missing:

    .venv/bin/python bench/api.py [--seconds 8] [--connections 16]

It starts the service under gunicorn (scripts/serve.sh, the same worker settings for every case:
WEB_CONCURRENCY=2, GUNICORN_THREADS=4, SQLite, rate limiting off) and a `flask reconcile` process,
seeds 60 deployments, deploys the http test agent, and drives each case with wrk from loopback:

- hello world: `GET /health` (the same app and middleware, no auth, no database);
- `GET /v1/deployments/<id>` with a bearer token (target ≥ 0.60 of hello world);
- `GET /v1/deployments?limit=50` (target ≥ 0.35 of hello world);
- `POST /v1/agents/<id>/interact` with an API key against `POST /invoke` on the replica directly
  (target ≥ 0.70 of direct).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import POST_JSON, free_port, service_env, start, start_service, stop, wrk  # noqa: E402

IMAGE = "deploy-test/http-agent:latest"


def run(*, seconds: int = 8, connections: int = 16) -> dict[str, dict[str, Any]]:
    """Start the service, seed it, drive each case with wrk; returns wrk's figures per case."""
    workdir = Path(tempfile.mkdtemp(prefix="deploy-bench-api-"))
    port = free_port()
    env = service_env(
        port,
        f"sqlite:///{workdir}/bench.db",
        ENGINE_NAMESPACE="bench-api",
        RATELIMIT_ENABLED="false",
        STARTUP_GRACE_SECONDS="0.2",
    )
    web = start_service(env, workdir / "web.log")
    reconciler = None
    base = f"http://127.0.0.1:{port}"
    try:
        reconciler = start(["flask", "--app", "app", "reconcile"], env, workdir / "reconciler.log")
        http = requests.Session()
        http.post(f"{base}/v1/auth/register", json={"email": "bench@example.com", "password": "bench-password"})
        login = http.post(f"{base}/v1/auth/login", json={"email": "bench@example.com", "password": "bench-password"})
        token = login.json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        for number in range(60):  # seeded deployments: stopped at once, so only rows remain
            agent = http.post(f"{base}/v1/agents", json={"name": f"seed-{number}", "image": IMAGE}).json()
            seeded = http.post(f"{base}/v1/agents/{agent['id']}/deploy", json={}).json()
            http.post(f"{base}/v1/deployments/{seeded['id']}/stop")
        live_agent = http.post(f"{base}/v1/agents", json={"name": "echo", "image": IMAGE}).json()
        deployment = http.post(f"{base}/v1/agents/{live_agent['id']}/deploy", json={"replicas": 1}).json()
        deadline = time.monotonic() + 60
        while (body := http.get(f"{base}/v1/deployments/{deployment['id']}").json())["status"] != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the live deployment did not become ready: {body}")
            time.sleep(0.1)
        replica_port = body["instances"][0]["port"]
        key = http.post(f"{base}/v1/agents/{live_agent['id']}/api-key", json={}).json()["key"]
        # Let the reconciler finish reacting to the seeding before measuring.
        time.sleep(2)

        bearer = {"Authorization": f"Bearer {token}"}
        cases = {"seconds": seconds, "connections": connections}
        results = {
            "hello world (GET /health)": wrk(f"{base}/health", **cases),
            "GET deployment by id": wrk(f"{base}/v1/deployments/{deployment['id']}", headers=bearer, **cases),
            "GET deployments, page of 50": wrk(f"{base}/v1/deployments?limit=50", headers=bearer, **cases),
            "agent directly (POST /invoke)": wrk(f"http://127.0.0.1:{replica_port}/invoke", script=POST_JSON, **cases),
            "interact (POST, API key)": wrk(
                f"{base}/v1/agents/{live_agent['id']}/interact", headers={"X-API-Key": key}, script=POST_JSON, **cases
            ),
        }
        http.delete(f"{base}/v1/deployments/{deployment['id']}")
    finally:
        stop(reconciler)
        stop(web)
    return results


def ratios(results: dict[str, dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(name, value, target) of each throughput ratio the issue sets; higher is better."""
    hello = results["hello world (GET /health)"]["rps"]
    direct = results["agent directly (POST /invoke)"]["rps"]
    return [
        ("GET by id / hello world", results["GET deployment by id"]["rps"] / hello, 0.60),
        ("list of 50 / hello world", results["GET deployments, page of 50"]["rps"] / hello, 0.35),
        ("interact / direct", results["interact (POST, API key)"]["rps"] / direct, 0.70),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    results = run(seconds=args.seconds, connections=args.connections)
    print(f"machine: {os.cpu_count()} cores; gunicorn 2 workers x 4 threads; SQLite; {args.connections} connections")
    print(f"{'case':<32}{'req/s':>10}{'p99 ms':>9}{'non-2xx':>9}")
    for name, figures in results.items():
        print(f"{name:<32}{figures['rps']:>10.0f}{figures['p99_ms']:>9.1f}{figures['non_2xx']:>9}")
    print()
    print(f"{'ratio':<32}{'value':>10}{'target':>9}")
    for name, value, target in ratios(results):
        print(f"{name:<32}{value:>10.2f}{'>= ' + str(target):>9} {'ok' if value >= target else 'MISSED'}")


if __name__ == "__main__":
    main()
