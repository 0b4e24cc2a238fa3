"""Driving the service under gunicorn with wrk, for the benchmarks and the load test.

wrk (Debian's package; installed here when missing) generates the load from loopback: it is C, so
on a 2-core machine it leaves the service most of the CPU, which a Python load generator would not.
Every run is bounded by its duration and stops by itself.

- `start_service` runs the production start step (scripts/serve.sh: migrations, then gunicorn with
  gunicorn.conf.py) on a free loopback port and waits for `/health`.
- `wrk` runs one case and parses requests/s, latency percentiles, non-2xx answers and socket errors.
- `clear_namespace` waits for the reconciler to remove a benchmark's containers, and removes what it left.
- `MIXED_WORKLOAD` is a wrk script for the load test: reads a dashboard makes (a deployment, the
  list, its events, the agents), health checks, and writes (evaluations posted by an agent's key).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]

POST_JSON = """
wrk.method = "POST"
wrk.body = '{"prompt": "hello"}'
wrk.headers["Content-Type"] = "application/json"
"""

MIXED_WORKLOAD = """
-- args: bearer token, deployment id, API key (telemetry scope)
local token, deployment, key
local counter = 0
function init(args)
  token, deployment, key = args[1], args[2], args[3]
end
function request()
  counter = counter + 1
  local slot = counter % 20
  local auth = {["Authorization"] = "Bearer " .. token}
  if slot < 10 then
    return wrk.format("GET", "/v1/deployments/" .. deployment, auth)
  elseif slot < 12 then
    return wrk.format("GET", "/v1/deployments?limit=50", auth)
  elseif slot < 14 then
    return wrk.format("GET", "/v1/deployments/" .. deployment .. "/events?limit=20", auth)
  elseif slot < 16 then
    return wrk.format("GET", "/v1/agents?limit=20", auth)
  elseif slot < 17 then
    return wrk.format("GET", "/health")
  else
    local body = '{"prompt": "p", "response": "r", "hallucination_probability": 0.1, "latency_sec": 0.25}'
    return wrk.format("POST", "/v1/evaluations", {["X-API-Key"] = key, ["Content-Type"] = "application/json"}, body)
  end
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    """The wrk binary, installing Debian's package first if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("installing Debian's wrk", file=sys.stderr)
    command = ["apt-get", "install", "-y", "-q", "wrk"]
    if os.geteuid() != 0:
        command = ["sudo", "-n", *command]
    if subprocess.run(command, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        subprocess.run([*command[:-4], "update", "-q"], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return shutil.which("wrk") or "wrk"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(output: str, label: str) -> float:
    found = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")


def wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    headers: dict[str, str] | None = None,
    script: str | None = None,
    script_args: list[str] | None = None,
    threads: int = 2,
) -> dict[str, Any]:
    """Run wrk once; returns requests, requests/s, p50/p99 latency (ms), non-2xx answers and socket errors."""
    command = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script or "")
    command += ["-s", lua.name, url]
    if script_args:
        command += ["--", *script_args]
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(lua.name)
    total = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests": int(total.group(1)) if total else 0,
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": _latency(output, "50%"),
        "p99_ms": _latency(output, "99%"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
        "output": output,
    }


def service_env(port: int, database_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a gunicorn service for a benchmark or the load test."""
    return {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "DOCKER_NETWORK_MODE": "host",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "LOG_LEVEL": "WARNING",
        "GUNICORN_CMD_ARGS": "--access-logfile /dev/null",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        **overrides,
    }


def start_service(env: dict[str, str], log: Path, *, timeout: float = 90) -> subprocess.Popen[bytes]:
    """scripts/serve.sh (migrations, then gunicorn) in its own process group; returns once `/health` answers."""
    process = subprocess.Popen(
        ["bash", "scripts/serve.sh"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{env['PORT']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/health", timeout=2).ok:
                return process
        except requests.RequestException:
            time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"the service did not answer /health within {timeout} s")


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Another process of the service (e.g. `flask reconcile`), in its own process group."""
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group we started (gunicorn and its workers), then SIGKILL if it lingers."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(timeout=10)


def clear_namespace(namespace: str, *, timeout: float = 60) -> None:
    """Wait until the engine holds no container of `namespace` (the reconciler removes a deleted deployment's
    replicas); after `timeout`, remove what is left, saying so: a benchmark never leaves a container behind.

    Asked of the engine, not of the API: a killed deployment's body shows no instances at once, before its
    containers are gone.
    """
    import docker

    client = docker.from_env()
    label = {"label": f"deploy-service.managed={namespace}"}
    deadline = time.monotonic() + timeout
    try:
        while client.api.containers(all=True, filters=label):
            if time.monotonic() > deadline:
                left = client.api.containers(all=True, filters=label)
                print(f"{len(left)} container(s) of {namespace} left after {timeout:g} s: removed", file=sys.stderr)
                for row in left:
                    client.api.remove_container(row["Id"], force=True)
                return
            time.sleep(0.2)
    finally:
        client.close()
