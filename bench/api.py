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

Each case runs `--rounds` times (default 3), the cases interleaved, and its best round counts. gunicorn's
gthread workers share one listening socket and race for each new connection: wrk opens its 16 at once,
and in about one round in three one worker wins them all while the other idles, which gives a third of
the throughput whatever the route. Every round prints the share of CPU each worker used, so such a
round shows as `one worker`; the best of three is a round where both served.
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


def _worker_ticks(master: int) -> dict[int, int]:
    """CPU clock ticks (user + system) used so far by each gunicorn worker of `master`."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return {}
    ticks = {}
    for child in children:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(child)] = int(fields[11]) + int(fields[12])
    return ticks


def _shares(before: dict[int, int], after: dict[int, int]) -> list[float]:
    used = [after[pid] - before.get(pid, 0) for pid in after]
    total = sum(used)
    return sorted((part / total for part in used), reverse=True) if total else []


def run(*, seconds: int = 8, connections: int = 16, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Start the service, seed it, drive each case with wrk `rounds` times; returns each case's best round.

    A case's figures are wrk's (`rps`, `p99_ms`, `non_2xx`, ...) for its best round, plus `rounds` (every
    round's req/s and worker CPU shares) and `non_2xx_total` over all rounds.
    """
    workdir = Path(tempfile.mkdtemp(prefix="deploy-bench-api-"))
    port = free_port()
    env = service_env(
        port,
        f"sqlite:///{workdir}/bench.db",
        ENGINE_NAMESPACE="bench-api",
        RATELIMIT_ENABLED="false",
        STARTUP_GRACE_SECONDS="0.2",
        QUOTA_REPLICAS="1000",  # 61 deployments of one user (who is also the first account, an admin)
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
        cases: dict[str, dict[str, Any]] = {
            "hello world (GET /health)": {"url": f"{base}/health"},
            "GET deployment by id": {"url": f"{base}/v1/deployments/{deployment['id']}", "headers": bearer},
            "GET deployments, page of 50": {"url": f"{base}/v1/deployments?limit=50", "headers": bearer},
            "agent directly (POST /invoke)": {"url": f"http://127.0.0.1:{replica_port}/invoke", "script": POST_JSON},
            "interact (POST, API key)": {
                "url": f"{base}/v1/agents/{live_agent['id']}/interact",
                "headers": {"X-API-Key": key},
                "script": POST_JSON,
            },
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, case in cases.items():
                before = _worker_ticks(web.pid)
                figures = wrk(
                    case["url"],
                    seconds=seconds,
                    connections=connections,
                    headers=case.get("headers"),
                    script=case.get("script"),
                )
                direct = name.startswith("agent directly")
                figures["shares"] = [] if direct else _shares(before, _worker_ticks(web.pid))
                runs[name].append(figures)
        results = {}
        for name, rounds_run in runs.items():
            best = dict(max(rounds_run, key=lambda figures: figures["rps"]))
            best["rounds"] = [(figures["rps"], figures["shares"]) for figures in rounds_run]
            best["non_2xx_total"] = sum(figures["non_2xx"] for figures in rounds_run)
            results[name] = best
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


def _round_text(rps: float, shares: list[float]) -> str:
    if not shares:
        return f"{rps:.0f}"
    balance = "one worker" if shares[0] > 0.8 else "/".join(f"{share:.0%}" for share in shares)
    return f"{rps:.0f} ({balance})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = run(seconds=args.seconds, connections=args.connections, rounds=args.rounds)
    print(
        f"machine: {os.cpu_count()} cores; gunicorn 2 workers x 4 threads; SQLite; {args.connections} connections;"
        f" best of {args.rounds} rounds of {args.seconds} s"
    )
    print(f"{'case':<32}{'req/s':>10}{'p99 ms':>9}{'non-2xx':>9}   rounds: req/s (CPU share of each worker)")
    for name, figures in results.items():
        rounds = ", ".join(_round_text(rps, shares) for rps, shares in figures["rounds"])
        print(f"{name:<32}{figures['rps']:>10.0f}{figures['p99_ms']:>9.1f}{figures['non_2xx_total']:>9}   {rounds}")
    print()
    print(f"{'ratio':<32}{'value':>10}{'target':>9}")
    for name, value, target in ratios(results):
        print(f"{name:<32}{value:>10.2f}{'>= ' + str(target):>9} {'ok' if value >= target else 'MISSED'}")


if __name__ == "__main__":
    main()
