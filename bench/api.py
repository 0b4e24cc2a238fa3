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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.deploy import free_port  # noqa: E402

IMAGE = "deploy-test/http-agent:latest"
POST_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"prompt": "hello"}'
wrk.headers["Content-Type"] = "application/json"
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing Debian's wrk", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def wrk(
    url: str, *, seconds: int, connections: int, headers: dict[str, str], script: str | None = None
) -> dict[str, Any]:
    """Run wrk; returns requests/s, p99 latency (ms) and the count of non-2xx answers."""
    command = [ensure_wrk(), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script or "")
    command += ["-s", lua.name, url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    os.unlink(lua.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "rps": rps,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "errors": int(errors.group(1)) if errors else 0,
    }


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="deploy-bench-api-"))
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{workdir}/bench.db",
        "ENGINE_NAMESPACE": "bench-api",
        "DOCKER_NETWORK_MODE": "host",
        "RATELIMIT_ENABLED": "false",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "LOG_LEVEL": "WARNING",
        "GUNICORN_CMD_ARGS": "--access-logfile /dev/null",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
        "STARTUP_GRACE_SECONDS": "0.2",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    web = start(["bash", "scripts/serve.sh"], env, workdir / "web.log")
    reconciler = None
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/health", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
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
        while (body := http.get(f"{base}/v1/deployments/{deployment['id']}").json())["status"] != "ready":
            time.sleep(0.1)
        replica_port = body["instances"][0]["port"]
        key = http.post(f"{base}/v1/agents/{live_agent['id']}/api-key", json={}).json()["key"]

        bearer = {"Authorization": f"Bearer {token}"}
        run = {"seconds": args.seconds, "connections": args.connections}
        results = {
            "hello world (GET /health)": wrk(f"{base}/health", headers={}, **run),
            "GET deployment by id": wrk(f"{base}/v1/deployments/{deployment['id']}", headers=bearer, **run),
            "GET deployments, page of 50": wrk(f"{base}/v1/deployments?limit=50", headers=bearer, **run),
            "agent directly (POST /invoke)": wrk(
                f"http://127.0.0.1:{replica_port}/invoke", headers={}, script=POST_SCRIPT, **run
            ),
            "interact (POST, API key)": wrk(
                f"{base}/v1/agents/{live_agent['id']}/interact", headers={"X-API-Key": key}, script=POST_SCRIPT, **run
            ),
        }
        http.delete(f"{base}/v1/deployments/{deployment['id']}")
    finally:
        for process in (reconciler, web):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)

    print(f"machine: {os.cpu_count()} cores; gunicorn 2 workers x 4 threads; SQLite; {args.connections} connections")
    print(f"{'case':<32}{'req/s':>10}{'p99 ms':>9}{'non-2xx':>9}")
    for name, figures in results.items():
        print(f"{name:<32}{figures['rps']:>10.0f}{figures['p99_ms']:>9.1f}{figures['errors']:>9}")
    hello = results["hello world (GET /health)"]["rps"]
    direct = results["agent directly (POST /invoke)"]["rps"]
    print()
    print(f"{'ratio':<32}{'value':>10}{'target':>9}")
    for name, value, target in (
        ("by id / hello world", results["GET deployment by id"]["rps"] / hello, 0.60),
        ("list of 50 / hello world", results["GET deployments, page of 50"]["rps"] / hello, 0.35),
        ("interact / direct", results["interact (POST, API key)"]["rps"] / direct, 0.70),
    ):
        print(f"{name:<32}{value:>10.2f}{'>= ' + str(target):>9} {'ok' if value >= target else 'MISSED'}")


if __name__ == "__main__":
    main()
