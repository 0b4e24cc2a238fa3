"""Benchmark: how long a deploy takes to reach `running`, against raw docker-py doing the same.

Run by hand on a machine with an engine (scripts/ensure_docker.sh) and the test images
(tests/integration/images/build.sh):

    .venv/bin/python bench/deploy.py [--rounds 8]

It starts the service as a real process (`python app.py`: API + embedded reconciler, SQLite, host
networking). For one replica it prints the median time from sending `POST /v1/agents/<id>/deploy`
(loopback HTTP) to the moment the deployment became `running` (its `started_at`), against a raw
`containers.run` of the same image until the engine reports it running; for 20 replicas, the
service's time against 20 sequential raw runs. Rounds are interleaved. Targets: ≤ 1.25× and ≤ 0.6×.

A/B against another checkout (e.g. an older commit in a second worktree, run with this venv):

    git worktree add --detach /tmp/old <commit>
    .venv/bin/python bench/deploy.py --compare /tmp/old [--phases]

starts a second service from that directory beside this one (own database, own engine namespace) and
runs every round on raw docker-py, this checkout and the other one, in an order that rotates by round,
so drift on a shared machine hits all three alike. `--phases` also prints, per checkout, the median
time from the POST to each of the deployment's events (read back from the events API).
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
from typing import Any

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


def service_run(
    http: requests.Session, base: str, agent_id: str, replicas: int, phases: dict[str, list[float]] | None = None
) -> float:
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
    if phases is not None:
        events = http.get(f"{base}/v1/deployments/{deployment_id}/events", params={"limit": 100}).json()
        firsts: dict[str, float] = {}
        for event in events["items"]:
            key = event["event_type"]
            if key == "status_changed":
                key = f"status -> {event['data'].get('to')}"
            at = datetime.fromisoformat(event["created_at"]).timestamp() - started
            firsts[key] = min(at, firsts.get(key, at))
        for key, at in firsts.items():
            phases.setdefault(key, []).append(at)
    assert http.delete(f"{base}/v1/deployments/{deployment_id}").status_code == 200
    return elapsed


def start_service(
    workdir: str, *, checkout: Path = ROOT, namespace: str = "bench"
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{workdir}/bench.db",
        "DOCKER_NETWORK_MODE": "host",
        "ENGINE_NAMESPACE": namespace,
        "CONTAINER_STOP_TIMEOUT": "1",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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


def _login(base: str) -> tuple[requests.Session, str]:
    """Register and log in the bench user on one service; returns its session and the bench agent's id."""
    http = requests.Session()
    http.post(f"{base}/v1/auth/register", json={"email": "bench@example.com", "password": "bench-password"})
    token = http.post(f"{base}/v1/auth/login", json={"email": "bench@example.com", "password": "bench-password"})
    http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    agent_id = http.post(f"{base}/v1/agents", json={"name": "bench", "image": IMAGE}).json()["id"]
    return http, agent_id


def run(
    *,
    rounds: int = 5,
    replicas: int = 20,
    settle: float = 1.5,
    compare: Path | None = None,
    phases: bool = False,
) -> dict[str, Any]:
    """Interleaved rounds of raw docker-py and the service (and the `compare` checkout); medians in seconds.

    Returns `service_one`, `raw_one`, `service_many`, `raw_many` (this checkout), `other_one` and
    `other_many` with `compare`, and with `phases` the median seconds from the POST to each first event,
    per side (`phases_service`, `phases_other`).
    """
    checkouts = {"service": ROOT} if compare is None else {"service": ROOT, "other": compare.resolve()}
    processes: list[subprocess.Popen[bytes]] = []
    sides: dict[str, tuple[requests.Session, str, str]] = {}
    docker_client = docker.from_env()
    one: dict[str, list[float]] = {name: [] for name in ("raw", *checkouts)}
    many: dict[str, list[float]] = {name: [] for name in ("raw", *checkouts)}
    events: dict[str, dict[str, list[float]]] = {name: {} for name in checkouts}
    try:
        for index, (name, checkout) in enumerate(checkouts.items()):
            process, base = start_service(
                tempfile.mkdtemp(prefix="deploy-bench-"), checkout=checkout, namespace=f"bench{index or ''}"
            )
            processes.append(process)
            http, agent_id = _login(base)
            sides[name] = (http, base, agent_id)
        docker_client.images.get(IMAGE)
        raw_run(docker_client, 1)
        for http, base, agent_id in sides.values():
            service_run(http, base, agent_id, 1)  # warm-up
        order = ["raw", *checkouts]

        def measure(name: str, count: int) -> float:
            if name == "raw":
                return raw_run(docker_client, count)
            http, base, agent_id = sides[name]
            return service_run(http, base, agent_id, count, events[name] if phases and count == 1 else None)

        for round_index in range(rounds):  # interleaved, so drift on a shared machine hits every side alike
            for name in order[round_index % len(order) :] + order[: round_index % len(order)]:
                time.sleep(settle)
                one[name].append(measure(name, 1))
        for round_index in range(max(rounds // 2, 1)):
            for name in order[round_index % len(order) :] + order[: round_index % len(order)]:
                time.sleep(settle * 3)
                many[name].append(measure(name, replicas))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        for index in range(len(checkouts)):
            managed = f"deploy-service.managed=bench{index or ''}"
            for container in docker_client.containers.list(all=True, filters={"label": managed}):
                container.remove(force=True)
        for container in docker_client.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)
    figures: dict[str, Any] = {
        "raw_one": statistics.median(one["raw"]),
        "raw_many": statistics.median(many["raw"]),
        "replicas": float(replicas),
        "engine": docker_client.version()["Version"],
    }
    for name in checkouts:
        figures[f"{name}_one"] = statistics.median(one[name])
        figures[f"{name}_many"] = statistics.median(many[name])
        figures[f"phases_{name}"] = {key: statistics.median(values) for key, values in events[name].items()}
    return figures


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
    parser.add_argument("--compare", type=Path, help="another checkout to run side by side (A/B)")
    parser.add_argument("--phases", action="store_true", help="print the median time to each deployment event")
    args = parser.parse_args()
    figures = run(
        rounds=args.rounds, replicas=args.replicas, settle=args.settle, compare=args.compare, phases=args.phases
    )
    print(f"machine: {os.cpu_count()} cores; engine {figures['engine']}; image {IMAGE}")
    sides = (
        {"service": "this checkout"}
        if args.compare is None
        else {"service": "this checkout", "other": str(args.compare)}
    )
    for side, label in sides.items():
        print(f"-- {label}")
        print(f"{'case':<36}{'service s':>11}{'raw s':>9}{'ratio':>8}{'target':>9}")
        for name, service, raw, target in (
            ("deploy -> running, 1 replica", figures[f"{side}_one"], figures["raw_one"], 1.25),
            (f"deploy -> running, {args.replicas} replicas", figures[f"{side}_many"], figures["raw_many"], 0.6),
        ):
            ratio = service / raw
            verdict = "ok" if ratio <= target else "MISSED"
            print(f"{name:<36}{service:>11.3f}{raw:>9.3f}{ratio:>8.2f}{'<= ' + str(target):>9} {verdict}")
        for key, at in sorted(figures[f"phases_{side}"].items(), key=lambda item: item[1]):
            print(f"   {at * 1000:>8.1f} ms  {key}")


if __name__ == "__main__":
    main()
