"""Benchmark: API throughput under gunicorn as production runs it, as ratios to Flask's hello world.

Run by hand on a machine with an engine and the test images (`scripts/ensure_docker.sh`,
`tests/integration/images/build.sh`); it installs Debian's `wrk` when missing and needs `redis-server`:

    .venv/bin/python bench/api.py [--seconds 8] [--connections 16] [--rounds 3]

Both servers run under gunicorn with gunicorn.conf.py and the same settings (WEB_CONCURRENCY=2,
GUNICORN_THREADS=4, gthread, the access log to /dev/null):

- the denominator: Flask's hello world (bench/hello.py: `GET /health` → `jsonify(status="ok")`);
- the service in its production configuration: scripts/serve.sh (migrations, then gunicorn), rate
  limiting on and counted in a Redis of this run's own (`RATELIMIT_STORAGE_URI`, as a multi-worker
  deployment must), at `RATE_LIMIT_PER_MINUTE=100000000` so that wrk never reaches it, Prometheus in
  multiprocess mode (gunicorn.conf.py sets it up), SQLite, and a `flask reconcile` process.

It seeds 60 deployments, deploys the http test agent, and drives each case with wrk from loopback:

- bare Flask hello world, and our `GET /health` (target ≥ 0.85 of hello world);
- `GET /v1/deployments/<id>` with a bearer token (target ≥ 0.60 of hello world);
- `GET /v1/deployments?limit=50` (target ≥ 0.35 of hello world);
- `POST /v1/agents/<id>/interact` with an API key against `POST /invoke` on the replica directly
  (target ≥ 0.70 of direct).

Each case runs `--rounds` times (default 3), the cases interleaved, and its best round counts. Every
round prints the share of CPU each gunicorn worker used: wrk opens its connections at once, and with
one listening socket shared by the workers one worker could win them all (`one worker`).
gunicorn.conf.py's `reuse_port` gives each worker a socket of its own, which the kernel spreads the
connections over; `GUNICORN_REUSE_PORT=false` in the environment measures the shared socket instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import POST_JSON, clear_namespace, free_port, service_env, start, start_service, stop, wrk  # noqa: E402

IMAGE = "deploy-test/http-agent:latest"
HELLO = "bare Flask hello world"
HEALTH = "our GET /health"
BY_ID = "GET deployment by id"
PAGE = "GET deployments, page of 50"
DIRECT = "agent directly (POST /invoke)"
INTERACT = "interact (POST, API key)"


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


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of this run's own on a free loopback port, as the rate limiter's storage."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is missing (Debian's redis-server package)")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = start([*command, "--dir", str(workdir)], dict(os.environ), workdir / "redis.log")
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.ping():
                return process, f"redis://127.0.0.1:{port}"
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                stop(process)
                raise RuntimeError("redis-server did not answer PING within 10 s") from None
            time.sleep(0.1)


def _start_hello(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """bench/hello.py under gunicorn with gunicorn.conf.py and the service's worker settings."""
    port = free_port()
    process = start(
        ["gunicorn", "--config", "gunicorn.conf.py", "bench.hello:app"], service_env(port, ""), workdir / "hello.log"
    )
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url, timeout=2).ok:
                return process, url
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"hello world did not start: {(workdir / 'hello.log').read_text()[-2000:]}")
        time.sleep(0.2)


def run(*, seconds: int = 8, connections: int = 16, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Start both servers, seed the service, drive each case with wrk `rounds` times; returns each case's
    best round.

    A case's figures are wrk's (`rps`, `p99_ms`, `non_2xx`, ...) for its best round, plus `rounds` (every
    round's req/s and worker CPU shares) and `non_2xx_total` over all rounds.
    """
    workdir = Path(tempfile.mkdtemp(prefix="deploy-bench-api-"))
    port = free_port()
    store, storage_uri = _start_redis(workdir)
    env = service_env(
        port,
        f"sqlite:///{workdir}/bench.db",
        ENGINE_NAMESPACE="bench-api",
        RATELIMIT_ENABLED="true",
        RATELIMIT_STORAGE_URI=storage_uri,
        RATE_LIMIT_PER_MINUTE="100000000",
        STARTUP_GRACE_SECONDS="0.2",
        QUOTA_REPLICAS="1000",  # 61 deployments of one user (who is also the first account, an admin)
    )
    web = reconciler = hello = None
    base = f"http://127.0.0.1:{port}"
    try:
        web = start_service(env, workdir / "web.log")
        hello, hello_url = _start_hello(workdir)
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
            HELLO: {"url": hello_url, "master": hello.pid},
            HEALTH: {"url": f"{base}/health"},
            BY_ID: {"url": f"{base}/v1/deployments/{deployment['id']}", "headers": bearer},
            PAGE: {"url": f"{base}/v1/deployments?limit=50", "headers": bearer},
            DIRECT: {"url": f"http://127.0.0.1:{replica_port}/invoke", "script": POST_JSON, "master": None},
            INTERACT: {
                "url": f"{base}/v1/agents/{live_agent['id']}/interact",
                "headers": {"X-API-Key": key},
                "script": POST_JSON,
            },
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, case in cases.items():
                master = case.get("master", web.pid)
                before = _worker_ticks(master) if master else {}
                figures = wrk(
                    case["url"],
                    seconds=seconds,
                    connections=connections,
                    headers=case.get("headers"),
                    script=case.get("script"),
                )
                figures["shares"] = _shares(before, _worker_ticks(master)) if master else []
                runs[name].append(figures)
        results = {}
        for name, rounds_run in runs.items():
            best = dict(max(rounds_run, key=lambda figures: figures["rps"]))
            best["rounds"] = [(figures["rps"], figures["shares"]) for figures in rounds_run]
            best["non_2xx_total"] = sum(figures["non_2xx"] for figures in rounds_run)
            results[name] = best
        http.delete(f"{base}/v1/deployments/{deployment['id']}")
        clear_namespace("bench-api")  # before the reconciler stops, or it would leave them
    finally:
        stop(reconciler)
        stop(hello)
        stop(web)
        stop(store)
        clear_namespace("bench-api", timeout=0)  # a run that failed midway leaves nothing either
    return results


def ratios(results: dict[str, dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(name, value, target) of each throughput ratio the issue sets; higher is better."""
    hello = results[HELLO]["rps"]
    direct = results[DIRECT]["rps"]
    return [
        ("our /health / hello world", results[HEALTH]["rps"] / hello, 0.85),
        ("GET by id / hello world", results[BY_ID]["rps"] / hello, 0.60),
        ("list of 50 / hello world", results[PAGE]["rps"] / hello, 0.35),
        ("interact / direct", results[INTERACT]["rps"] / direct, 0.70),
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
    reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "true")
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; gunicorn 2 workers x 4 threads"
        f" (GUNICORN_REUSE_PORT={reuse_port}); SQLite; limiter on (Redis); {args.connections} connections;"
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
