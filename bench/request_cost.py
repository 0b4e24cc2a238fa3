"""Benchmark: what one request costs in process, over a bare Flask hello-world app.

    .venv/bin/python bench/request_cost.py [--requests 2000] [--rounds 5] [--profile [N]]

No server, no engine, no network: Flask's test client drives both apps in this process, so the figure is
the service's own per-request work (hooks, extensions, the view) and holds on a busy machine far better
than wrk's. The service runs as production does in the parts a request touches: rate limiting on (memory
storage, a limit the run cannot reach) and Prometheus counting every request. The bare app is
`@app.get("/health") → jsonify(status="ok")`; both are measured in interleaved rounds and the best round
of each counts. The test client's own work (building the environ, its cookie jar) is paid by both apps
alike, so it cancels out of the overhead.

`--profile` runs `--requests` more requests of the service's `/health` under cProfile and prints the top
N functions by cumulative time (cProfile's own cost inflates every figure about threefold: read it
for shares, not for microseconds).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

from flask import Flask, Response, jsonify
from flask.testing import FlaskClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATH = "/health"


def bare_app() -> Flask:
    """The denominator: Flask's hello world, answering the same path with a small JSON body."""
    app = Flask("bare")

    @app.get(PATH)
    def health() -> Response:
        return jsonify(status="ok")

    return app


def service_app() -> Flask:
    """The service as production configures the parts a request touches (a throwaway SQLite database)."""
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 58)
    from deploy_service import create_app

    workdir = tempfile.mkdtemp(prefix="deploy-bench-cost-")
    return create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir}/bench.db",
            "RATELIMIT_ENABLED": True,
            "RATELIMIT_STORAGE_URI": "memory://",
            "RATE_LIMIT_PER_MINUTE": 100_000_000,
        }
    )


def per_request_us(client: FlaskClient, requests: int) -> float:
    """Mean wall time of one `GET /health` over `requests` requests, in microseconds."""
    started = time.perf_counter()
    for _ in range(requests):
        response = client.get(PATH)
        if response.status_code != 200:
            raise RuntimeError(f"GET {PATH} answered {response.status_code}")
    return (time.perf_counter() - started) / requests * 1e6


def measure(*, requests: int = 2000, rounds: int = 5) -> dict[str, float]:
    """Best round of each app, interleaved: `{"bare": µs, "service": µs, "overhead": µs}`."""
    clients = {"bare": bare_app().test_client(), "service": service_app().test_client()}
    for client in clients.values():
        per_request_us(client, requests // 10)  # warm-up: first-request work, caches
    best = dict.fromkeys(clients, float("inf"))
    for _ in range(rounds):
        for name, client in clients.items():
            best[name] = min(best[name], per_request_us(client, requests))
    return {**best, "overhead": best["service"] - best["bare"]}


def profile(*, requests: int, top: int) -> None:
    """Print the service's `/health` under cProfile, top `top` functions by cumulative time."""
    client = service_app().test_client()
    per_request_us(client, requests // 10)
    profiler = cProfile.Profile()
    profiler.enable()
    per_request_us(client, requests)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=int, nargs="?", const=40, default=0, metavar="N")
    args = parser.parse_args()
    figures = measure(requests=args.requests, rounds=args.rounds)
    print(f"in process, GET {PATH}, best of {args.rounds} rounds of {args.requests} requests:")
    print(f"  bare Flask hello world  {figures['bare']:7.1f} µs")
    print(f"  Deploy Service          {figures['service']:7.1f} µs")
    print(f"  overhead                {figures['overhead']:7.1f} µs   (target <= 30)")
    if args.profile:
        profile(requests=args.requests, top=args.profile)


if __name__ == "__main__":
    main()
