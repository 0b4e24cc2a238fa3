"""Benchmark: how long a deploy takes to reach `running`, against raw docker-py doing the same.

Run by hand on a machine with an engine (scripts/ensure_docker.sh) and the test images
(tests/integration/images/build.sh):

    .venv/bin/python bench/deploy.py [--rounds 8]

It starts the service as a real process (`python app.py`: API + embedded reconciler, SQLite, host
networking). For one replica it prints the median time from sending `POST /v1/agents/<id>/deploy`
(loopback HTTP) to the moment the deployment became `running` (its `started_at`), against a raw
`containers.run` of the same image until the engine reports it running; for 20 replicas, the
service's time against 20 sequential raw runs. Rounds are interleaved. Targets: ≤ 1.25× and ≤ 0.6×.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import docker
import requests

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "deploy-test/http-agent:latest"
LABEL = "deploy-service.bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_run(client: docker.DockerClient, count: int) -> float:
    """Start `count` containers one after another, each until running; seconds for all."""
    started = time.perf_counter()
    containers = []
    for index in range(count):
        container = client.containers.run(
            IMAGE,
            detach=True,
            network_mode="host",
            environment={"PORT": str(free_port()), "REPLICA_INDEX": str(index)},
            labels={LABEL: "raw"},
        )
        while container.status != "running":
            container.reload()
        containers.append(container)
    elapsed = time.perf_counter() - started
    for container in containers:
        container.remove(force=True)
    return elapsed


def service_run(http: requests.Session, base: str, agent_id: str, replicas: int) -> float:
    """POST deploy → the deployment's `started_at` (stamped when it became `running`); seconds.

    The end is read from the service's own timestamp (same machine, same clock), and the client polls
    only every 50 ms, so the polling itself does not take CPU from the engine during the measurement.
    """
    started = time.time()
    response = http.post(f"{base}/v1/agents/{agent_id}/deploy", json={"replicas": replicas})
    assert response.status_code == 202, response.text
    deployment_id = response.json()["id"]
    while True:
        body = http.get(f"{base}/v1/deployments/{deployment_id}").json()
        if body["status"] in ("running", "ready"):
            break
        if body["status"] == "failed":
            raise RuntimeError(f"deployment failed: {body['error']}")
        time.sleep(0.05)
    elapsed = datetime.fromisoformat(body["started_at"]).timestamp() - started
    assert http.delete(f"{base}/v1/deployments/{deployment_id}").status_code == 200
    return elapsed


def start_service(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{workdir}/bench.db",
        "DOCKER_NETWORK_MODE": "host",
        "ENGINE_NAMESPACE": "bench",
        "CONTAINER_STOP_TIMEOUT": "1",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=1).ok:
                return process, base
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the service did not start")


def run(*, rounds: int = 5, replicas: int = 20, settle: float = 1.5) -> dict[str, float]:
    """Interleaved rounds of raw docker-py and the service; returns the medians in seconds."""
    workdir = tempfile.mkdtemp(prefix="deploy-bench-")
    process, base = start_service(workdir)
    docker_client = docker.from_env()
    try:
        http = requests.Session()
        http.post(f"{base}/v1/auth/register", json={"email": "bench@example.com", "password": "bench-password"})
        token = http.post(f"{base}/v1/auth/login", json={"email": "bench@example.com", "password": "bench-password"})
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        agent_id = http.post(f"{base}/v1/agents", json={"name": "bench", "image": IMAGE}).json()["id"]
        docker_client.images.get(IMAGE)
        raw_run(docker_client, 1)
        service_run(http, base, agent_id, 1)  # warm-up
        raw_one, svc_one, raw_many, svc_many = [], [], [], []
        for _ in range(rounds):  # interleaved, so drift on a shared machine hits both sides alike
            time.sleep(settle)
            raw_one.append(raw_run(docker_client, 1))
            time.sleep(settle)
            svc_one.append(service_run(http, base, agent_id, 1))
        for _ in range(max(rounds // 2, 1)):
            time.sleep(settle * 3)
            raw_many.append(raw_run(docker_client, replicas))
            time.sleep(settle * 3)
            svc_many.append(service_run(http, base, agent_id, replicas))
    finally:
        process.terminate()
        process.wait(timeout=30)
        for container in docker_client.containers.list(all=True, filters={"label": "deploy-service.managed=bench"}):
            container.remove(force=True)
        for container in docker_client.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)
    return {
        "service_one": statistics.median(svc_one),
        "raw_one": statistics.median(raw_one),
        "service_many": statistics.median(svc_many),
        "raw_many": statistics.median(raw_many),
        "replicas": float(replicas),
        "engine": docker_client.version()["Version"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument(
        "--settle",
        type=float,
        default=1.5,
        help="pause before each measured run, so the engine's clean-up of "
        "the previous run's containers (which goes on after the API call returns) does not land in it",
    )
    args = parser.parse_args()
    figures = run(rounds=args.rounds, replicas=args.replicas, settle=args.settle)
    print(f"machine: {os.cpu_count()} cores; engine {figures['engine']}; image {IMAGE}")
    print(f"{'case':<36}{'service s':>11}{'raw s':>9}{'ratio':>8}{'target':>9}")
    for name, service, raw, target in (
        ("deploy -> running, 1 replica", figures["service_one"], figures["raw_one"], 1.25),
        (f"deploy -> running, {args.replicas} replicas", figures["service_many"], figures["raw_many"], 0.6),
    ):
        ratio = service / raw
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{name:<36}{service:>11.3f}{raw:>9.3f}{ratio:>8.2f}{'<= ' + str(target):>9} {verdict}")


if __name__ == "__main__":
    main()
