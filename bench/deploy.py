"""Benchmark: how long a deploy takes to reach `running`, against raw docker-py doing the same.

Run by hand on a machine with an engine (scripts/ensure_docker.sh) and the test images
(tests/integration/images/build.sh):

    .venv/bin/python bench/deploy.py [--rounds 5]

It prints, for one replica, the median time from `POST /v1/agents/<id>/deploy` to status `running`
(service: API + reconciler embedded as in `python app.py`, host networking, SQLite) against a raw
`containers.run` of the same image until the engine reports it running; and for 20 replicas the
service's time against 20 sequential raw runs. Targets: ≤ 1.25× and ≤ 0.6×.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from deploy_service import create_app  # noqa: E402
from deploy_service.reconciler import Reconciler  # noqa: E402

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


def service_run(client: Any, headers: dict[str, str], agent_id: str, replicas: int) -> float:
    """POST deploy, poll until `running`; seconds. Then delete the deployment."""
    started = time.perf_counter()
    response = client.post(f"/v1/agents/{agent_id}/deploy", json={"replicas": replicas}, headers=headers)
    assert response.status_code == 202, response.get_json()
    deployment_id = response.get_json()["id"]
    while True:
        status = client.get(f"/v1/deployments/{deployment_id}", headers=headers).get_json()["status"]
        if status in ("running", "ready"):
            break
        if status == "failed":
            raise RuntimeError("deployment failed")
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    assert client.delete(f"/v1/deployments/{deployment_id}", headers=headers).status_code == 200
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=20)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="deploy-bench-")
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir}/bench.db",
            "DOCKER_NETWORK_MODE": "host",
            "PASSWORD_HASH_TIME_COST": 1,
            "PASSWORD_HASH_MEMORY_KIB": 8,
            "RECONCILE_WORKERS": 20,
            "CONTAINER_STOP_TIMEOUT": 1.0,
            "MAX_REPLICAS": 50,
        }
    )
    with app.app_context():
        upgrade()
    reconciler = Reconciler(app)
    reconciler.start()
    client = app.test_client()
    client.post("/v1/auth/register", json={"email": "bench@example.com", "password": "bench-password"})
    token = client.post("/v1/auth/login", json={"email": "bench@example.com", "password": "bench-password"}).get_json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    agent_id = client.post("/v1/agents", json={"name": "bench", "image": IMAGE}, headers=headers).get_json()["id"]
    docker_client = docker.from_env()
    docker_client.images.get(IMAGE)

    try:
        raw_run(docker_client, 1)
        service_run(client, headers, agent_id, 1)  # warm-up
        raw_one = statistics.median(raw_run(docker_client, 1) for _ in range(args.rounds))
        svc_one = statistics.median(service_run(client, headers, agent_id, 1) for _ in range(args.rounds))
        raw_many = statistics.median(raw_run(docker_client, args.replicas) for _ in range(max(args.rounds // 2, 1)))
        svc_many = statistics.median(
            service_run(client, headers, agent_id, args.replicas) for _ in range(max(args.rounds // 2, 1))
        )
    finally:
        reconciler.stop()
        for container in docker_client.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)

    print(f"machine: {os.cpu_count()} cores; engine {docker_client.version()['Version']}; image {IMAGE}")
    print(f"{'case':<36}{'service s':>11}{'raw s':>9}{'ratio':>8}{'target':>9}")
    for name, service, raw, target in (
        ("deploy -> running, 1 replica", svc_one, raw_one, 1.25),
        (f"deploy -> running, {args.replicas} replicas", svc_many, raw_many, 0.6),
    ):
        ratio = service / raw
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{name:<36}{service:>11.3f}{raw:>9.3f}{ratio:>8.2f}{'<= ' + str(target):>9} {verdict}")


if __name__ == "__main__":
    main()
