"""Benchmark: streamed `interact` through the service against the streaming agent called directly.

Run by hand on a machine with an engine and the test images (`scripts/ensure_docker.sh`,
`tests/integration/images/build.sh`):

    .venv/bin/python bench/interact.py [--calls 200] [--megabytes 20] [--rounds 5]

The service runs as production runs it (bench/loadgen.py: scripts/serve.sh, gunicorn with
gunicorn.conf.py, WEB_CONCURRENCY=2, GUNICORN_THREADS=4, gthread, SQLite, a `flask reconcile`
process), with one replica of `deploy-test/stream-agent` (busybox httpd, a CGI script writing
server-sent events). Two figures, each against the same agent's replica called directly on its port:

- time to first byte: `--calls` calls of one event each, direct and through the service taken in
  turn (so drift hits both alike); each call's time from sending the request to the first piece of
  the body. The figure is the service's median minus the direct median (target ≤ 5 ms). For context,
  the same calls without `Accept: text/event-stream` (the agent's JSON answer, through the JSON proxy)
  are timed too: what streaming adds over a plain call, as against what every call through the
  service costs (the key's check, the replica's lookup, the record); and `GET /health` (gunicorn and
  Flask alone, no database) in the same loop.
- streaming throughput: `--megabytes` MB of `data: xxx...` lines written as fast as the agent can
  (`{"bytes": B}`), read to the end; `--rounds` rounds taken in turn, the best of each side. The figure
  is the service's MB/s over the direct MB/s (target ≥ 0.7).

Both sides are read the same way (urllib3, `read1` of up to 64 KiB: whatever has arrived), one call at
a time from one client thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import clear_namespace, free_port, service_env, start, start_service, stop  # noqa: E402

IMAGE = "deploy-test/stream-agent:latest"
STREAM = {"Accept": "text/event-stream", "Content-Type": "application/json"}
TTFB_TARGET_MS = 5.0
THROUGHPUT_TARGET = 0.7


def _first_byte(http: urllib3.PoolManager, url: str, headers: dict[str, str], body: bytes) -> float:
    """Seconds from sending the request to the first piece of the body; the rest is read and dropped."""
    started = time.perf_counter()
    response = http.request("POST", url, body=body, headers=headers, preload_content=False)
    first = response.read1(65536)
    elapsed = time.perf_counter() - started
    if response.status != 200 or not first:
        raise RuntimeError(f"{url} answered {response.status} {first[:200]!r}")
    while response.read1(65536):
        pass
    response.release_conn()
    return elapsed


def _throughput(http: urllib3.PoolManager, url: str, headers: dict[str, str], size: int) -> float:
    """MB/s of a `size`-byte stream, from sending the request to its last byte."""
    started = time.perf_counter()
    response = http.request(
        "POST", url, body=json.dumps({"bytes": size}).encode(), headers=headers, preload_content=False
    )
    received = 0
    while piece := response.read1(65536):
        received += len(piece)
    elapsed = time.perf_counter() - started
    response.release_conn()
    if received != size:
        raise RuntimeError(f"{url} sent {received} bytes of {size}")
    return size / elapsed / 1e6


def run(*, calls: int = 200, megabytes: int = 20, rounds: int = 5) -> dict[str, Any]:
    """Start the service, deploy the streaming agent, measure; returns the figures (see the module docstring)."""
    workdir = Path(tempfile.mkdtemp(prefix="deploy-bench-interact-"))
    port = free_port()
    env = service_env(
        port,
        f"sqlite:///{workdir}/bench.db",
        ENGINE_NAMESPACE="bench-interact",
        RATELIMIT_ENABLED="false",
        STARTUP_GRACE_SECONDS="0.2",
    )
    web = reconciler = None
    base = f"http://127.0.0.1:{port}"
    try:
        web = start_service(env, workdir / "web.log")
        reconciler = start(["flask", "--app", "app", "reconcile"], env, workdir / "reconciler.log")
        session = requests.Session()
        account = {"email": "bench@example.com", "password": "bench-password"}
        session.post(f"{base}/v1/auth/register", json=account)
        session.headers["Authorization"] = (
            "Bearer " + session.post(f"{base}/v1/auth/login", json=account).json()["access_token"]
        )
        agent = session.post(
            f"{base}/v1/agents",
            json={
                "name": "streamer",
                "image": IMAGE,
                "invoke_path": "/cgi-bin/invoke",
                "health_check": {"path": "/cgi-bin/health", "interval_seconds": 1},
            },
        ).json()
        deployment = session.post(f"{base}/v1/agents/{agent['id']}/deploy", json={"replicas": 1}).json()
        deadline = time.monotonic() + 60
        while (body := session.get(f"{base}/v1/deployments/{deployment['id']}").json())["status"] != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the deployment did not become ready: {body}")
            time.sleep(0.1)
        direct = f"http://127.0.0.1:{body['instances'][0]['port']}/cgi-bin/invoke"
        through = f"{base}/v1/agents/{agent['id']}/interact"
        key = session.post(f"{base}/v1/agents/{agent['id']}/api-key", json={}).json()["key"]
        keyed = {**STREAM, "X-API-Key": key}
        http = urllib3.PoolManager(maxsize=4, retries=False)
        one_event = json.dumps({"events": 1, "pause": 0}).encode()
        for _ in range(10):  # warm both paths: connections, the first request of each worker
            _first_byte(http, direct, STREAM, one_event)
            _first_byte(http, through, keyed, one_event)
        direct_ttfb: list[float] = []
        service_ttfb: list[float] = []
        json_ttfb: list[float] = []
        health: list[float] = []
        plain = {"Content-Type": "application/json", "X-API-Key": key}
        for _ in range(calls):
            direct_ttfb.append(_first_byte(http, direct, STREAM, one_event))
            service_ttfb.append(_first_byte(http, through, keyed, one_event))
            json_ttfb.append(_first_byte(http, through, plain, one_event))
            started = time.perf_counter()
            http.request("GET", f"{base}/health")
            health.append(time.perf_counter() - started)
        size = megabytes * 1_000_000
        direct_mbs: list[float] = []
        service_mbs: list[float] = []
        for _ in range(rounds):
            direct_mbs.append(_throughput(http, direct, STREAM, size))
            service_mbs.append(_throughput(http, through, keyed, size))
        recorded = session.get(f"{base}/v1/agents/{agent['id']}/invocations?limit=1").json()
        session.delete(f"{base}/v1/deployments/{deployment['id']}")
        clear_namespace("bench-interact")  # before the reconciler stops, or it would leave them
    finally:
        stop(reconciler)
        stop(web)
        clear_namespace("bench-interact", timeout=0)  # a run that failed midway leaves nothing either
    return {
        "direct_ttfb_ms": statistics.median(direct_ttfb) * 1000,
        "service_ttfb_ms": statistics.median(service_ttfb) * 1000,
        "service_ttfb_p95_ms": sorted(service_ttfb)[int(len(service_ttfb) * 0.95)] * 1000,
        "json_ttfb_ms": statistics.median(json_ttfb) * 1000,
        "health_ms": statistics.median(health) * 1000,
        "direct_mbs": max(direct_mbs),
        "service_mbs": max(service_mbs),
        "rounds_mbs": list(zip(direct_mbs, service_mbs, strict=True)),
        "recorded": recorded["total"],
    }


def rows(figures: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(name, value, target, met) of the two figures the issue sets."""
    extra = figures["service_ttfb_ms"] - figures["direct_ttfb_ms"]
    ratio = figures["service_mbs"] / figures["direct_mbs"]
    return [
        ("stream first byte: service - direct (median ms)", extra, f"<= {TTFB_TARGET_MS}", extra <= TTFB_TARGET_MS),
        ("stream throughput: service / direct", ratio, f">= {THROUGHPUT_TARGET}", ratio >= THROUGHPUT_TARGET),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = run(calls=args.calls, megabytes=args.megabytes, rounds=args.rounds)
    for name, value, target, met in rows(figures):
        print(f"{name:50} {value:8.2f}  {target:8}  {'ok' if met else 'MISSED'}")
    print(
        f"  (first byte median: direct {figures['direct_ttfb_ms']:.2f} ms, service {figures['service_ttfb_ms']:.2f} ms,"
        f" service p95 {figures['service_ttfb_p95_ms']:.2f} ms; the same agent's JSON answer through the service"
        f" {figures['json_ttfb_ms']:.2f} ms; GET /health {figures['health_ms']:.2f} ms)"
    )
    print(f"  (throughput best: direct {figures['direct_mbs']:.0f} MB/s, service {figures['service_mbs']:.0f} MB/s)")
    print(f"  (rounds, direct/service MB/s: {', '.join(f'{d:.0f}/{s:.0f}' for d, s in figures['rounds_mbs'])})")
    print(f"  (invocations recorded: {figures['recorded']})")


if __name__ == "__main__":
    main()
