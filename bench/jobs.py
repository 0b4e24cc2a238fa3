"""Benchmark: a job from `POST deploy` to `succeeded`, against `docker run` of the same image to its exit.

Run by hand on a machine with an engine (scripts/ensure_docker.sh) and the test images
(tests/integration/images/build.sh crasher), with nothing else using the engine:

    .venv/bin/python bench/jobs.py [--rounds 5] [--seconds 2] [--replicas 1] [--tick 1]

It starts the service as a real process (`python app.py`: API + embedded reconciler, SQLite, host
networking; `--tick` sets its `RECONCILE_TICK_SECONDS`, by default the service's default, 1 s) and registers
a job agent of `deploy-test/crasher`, which prints two lines and exits 0 after `--seconds` (`EXIT_CODE=0`,
`CRASH_DELAY`). Each round, interleaved:

- service: `POST /v1/agents/<id>/deploy` → the deployment `succeeded` (every replica exited 0, seen by the
  reconciler, its containers removed); timed from sending the POST to the deployment's `ended_at` (the
  service's clock on this machine), then it is deleted for the next round;
- raw: docker-py runs as many containers of the same image with the same env (`docker run -d`), and waits
  until every one exited (`docker wait`); timed from the first call to the last exit, then they are removed.

Printed: the median of each and their ratio (target <= 1.3x). The service's overhead is its start of the
containers (the same engine calls) plus how soon a pass sees the exit: the container's `die` event wakes the
reconciler (`Runner.watch_exits`), so it is not a tick away (a run under way is also looked at every tick,
which is all there is without the events).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.deploy import start_service  # noqa: E402

IMAGE = "deploy-test/crasher:latest"
LABEL = "deploy-service.bench-jobs"
NAMESPACE = "bench-jobs"


def raw_run(client: docker.DockerClient, replicas: int, seconds: float) -> float:
    """`docker run` of `replicas` containers of the job's image, each to its exit; seconds for all."""
    env = {"EXIT_CODE": "0", "CRASH_DELAY": f"{seconds:g}"}
    started = time.perf_counter()
    containers = [
        client.containers.run(IMAGE, detach=True, network_mode="host", environment=env, labels={LABEL: "raw"})
        for _ in range(replicas)
    ]
    try:
        for container in containers:
            code = container.wait()["StatusCode"]
            assert code == 0, code
        return time.perf_counter() - started
    finally:
        for container in containers:
            container.remove(force=True)


def service_run(http: requests.Session, base: str, agent_id: str, replicas: int) -> float:
    """POST deploy → the deployment's `ended_at` once it `succeeded`; seconds. It is deleted afterwards."""
    started = time.time()
    response = http.post(f"{base}/v1/agents/{agent_id}/deploy", json={"replicas": replicas})
    assert response.status_code == 202, response.text
    deployment_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        body = http.get(f"{base}/v1/deployments/{deployment_id}").json()
        if body["status"] == "succeeded":
            break
        if body["status"] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"the job did not succeed: {body['status']} {body['error']}")
        time.sleep(0.05)
    assert http.delete(f"{base}/v1/deployments/{deployment_id}").status_code == 200
    return datetime.fromisoformat(body["ended_at"]).timestamp() - started


def run(*, rounds: int = 5, seconds: float = 2.0, replicas: int = 1, tick: float | None = None) -> dict[str, Any]:
    """Interleaved rounds of the service and of raw `docker run`; medians in seconds."""
    client = docker.from_env()
    client.images.get(IMAGE)
    overrides = {} if tick is None else {"RECONCILE_TICK_SECONDS": str(tick)}
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    process = None
    try:
        process, base = start_service(tempfile.mkdtemp(prefix="deploy-bench-"), namespace=NAMESPACE)
        http = requests.Session()
        credentials = {"email": "bench@example.com", "password": "bench-password"}
        http.post(f"{base}/v1/auth/register", json=credentials)
        token = http.post(f"{base}/v1/auth/login", json=credentials).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        agent = http.post(
            f"{base}/v1/agents",
            json={
                "name": "bench-job",
                "image": IMAGE,
                "kind": "job",
                "env": {"EXIT_CODE": "0", "CRASH_DELAY": f"{seconds:g}"},
            },
        )
        assert agent.status_code == 201, agent.text
        agent_id = agent.json()["id"]
        raw_run(client, 1, 0)  # warm-up
        service_run(http, base, agent_id, 1)
        services, raws = [], []
        for round_index in range(rounds):  # interleaved, the first side alternating
            sides = [
                lambda: services.append(service_run(http, base, agent_id, replicas)),
                lambda: raws.append(raw_run(client, replicas, seconds)),
            ]
            for side in sides if round_index % 2 == 0 else reversed(sides):
                time.sleep(0.5)
                side()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        for key_name, value in saved.items():
            if value is None:
                os.environ.pop(key_name, None)
            else:
                os.environ[key_name] = value
        for label in (f"deploy-service.managed={NAMESPACE}", LABEL):
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
    return {
        "service": statistics.median(services),
        "raw": statistics.median(raws),
        "services": services,
        "raws": raws,
        "engine": client.version()["Version"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="how long the job runs before it exits 0")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--tick", type=float, help="the service's RECONCILE_TICK_SECONDS (default: its default)")
    args = parser.parse_args()
    figures = run(rounds=args.rounds, seconds=args.seconds, replicas=args.replicas, tick=args.tick)
    tick = "default" if args.tick is None else f"{args.tick:g}s"
    print(f"machine: {os.cpu_count()} cores; engine {figures['engine']}; image {IMAGE}")
    print(
        f"a job of {args.replicas} replica(s) exiting 0 after {args.seconds:g}s, reconcile tick {tick}, "
        f"{args.rounds} rounds"
    )
    ratio = figures["service"] / figures["raw"]
    print(f"{'case':<44}{'value':>10}{'target':>10}")
    print(f"{'service: POST deploy -> succeeded s':<44}{figures['service']:>10.3f}")
    print(f"{'raw: docker run -> exit s':<44}{figures['raw']:>10.3f}")
    verdict = "ok" if ratio <= 1.3 else "MISSED"
    print(f"{'ratio':<44}{ratio:>10.2f}{'<= 1.3':>10} {verdict}")
    services = [round(s, 2) for s in figures["services"]]
    print(f"   (service {services} s, raw {[round(r, 2) for r in figures['raws']]} s)")


if __name__ == "__main__":
    main()
