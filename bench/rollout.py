"""Benchmark: a start-first rolling update of 5 health-checked replicas, against starting them one by one.

Run by hand on a machine with an engine (scripts/ensure_docker.sh) and the test images
(tests/integration/images/build.sh), with nothing else using the engine:

    .venv/bin/python bench/rollout.py [--rounds 3] [--replicas 5] [--interval 0.5] [--tick 1] [--surge 1]

It starts the service as a real process (`python app.py`: API + embedded reconciler, SQLite, host
networking, `RATE_LIMIT_PER_MINUTE` out of reach; `--tick` sets its `RECONCILE_TICK_SECONDS` and `--surge`
its `ROLLOUT_MAX_SURGE`, by default the service's defaults) and deploys
`--replicas` replicas of the http agent with an HTTP health check every `--interval` seconds. Each round
then:

- update: the agent's image is switched between the http agent and a copy of it with another image id
  (`AGENT_VERSION=2`, built here, removed afterwards), and `POST /restart` rolls the new release out;
  timed from the POST to the release's `activated_at` (every replica of it ready: the old ones removed
  but the last, whose removal follows in the same pass, as it serves nothing by then),
  while a thread calls `POST /v1/agents/<id>/interact` through the service in a loop with the agent's API
  key: every answer that is not a 200 is a failed call;
- one by one: the service's own runner (`DockerRunner.start_replica`, the create arguments every replica
  gets: CPU and memory limits, dropped capabilities, read-only root with a tmpfs, a non-root user, log
  rotation) starts the same replicas one after another, each until its `/health` answers 200, polled at
  the same interval (what a one-at-a-time start-first update must at least wait for), then removes them;
- bare: the same with docker-py's `containers.run` and none of those arguments (the baseline before
  2026-12-03: a lighter container than any replica, kept as a second figure).

Printed: the median update and baseline times, the update's ratio to the same replicas started one by one
(target <= 1.5x) and to the bare starts, and the failed calls over every update (target 0) with the
number of calls made.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.deploy import IMAGE, free_port, start_service  # noqa: E402
from deploy_service.runner import DockerRunner, ReplicaSpec  # noqa: E402
from deploy_service.runner.settings import RunnerSettings  # noqa: E402

LABEL = "deploy-service.bench-rollout"
NAMESPACE = "bench-rollout"
RAW_NAMESPACE = "bench-rollout-raw"


def healthy(port: int, timeout: float) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def raw_run(client: docker.DockerClient, count: int, interval: float) -> float:
    """Start `count` containers one after another, each until its health check passes; seconds for all."""
    started = time.perf_counter()
    containers = []
    try:
        for index in range(count):
            port = free_port()
            container = client.containers.run(
                IMAGE,
                detach=True,
                network_mode="host",
                environment={"PORT": str(port), "REPLICA_INDEX": str(index)},
                labels={LABEL: "raw"},
            )
            containers.append(container)
            while container.status != "running":
                container.reload()
            while not healthy(port, timeout=1.0):
                time.sleep(interval)
        return time.perf_counter() - started
    finally:
        for container in containers:
            container.remove(force=True)


def runner_run(count: int, interval: float) -> float:
    """`raw_run` through the service's own runner: the same replicas (the same create arguments: limits,
    dropped capabilities, read-only root, tmpfs, non-root user, log rotation) started one after another by
    `DockerRunner.start_replica`, each until its health check passes; seconds for all."""
    runner = DockerRunner(RunnerSettings(network_mode="host", namespace=RAW_NAMESPACE, stop_timeout=1.0))
    deployment = f"bench-raw-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    names = []
    try:
        for index in range(count):
            port = free_port()
            spec = ReplicaSpec(
                deployment_id=deployment, agent_id="bench", index=index, generation=1, image=IMAGE, port=port
            )
            names.append(runner.start_replica(spec).container_id)
            while not healthy(port, timeout=1.0):
                time.sleep(interval)
        return time.perf_counter() - started
    finally:
        for name in names:
            runner.remove_replica(name, stop_timeout=1.0)
        runner.close()


class Caller:
    """`interact` through the service, in a loop on a thread, while `calling` is set; counts the answers."""

    def __init__(self, base: str, agent_id: str, key: str) -> None:
        self.url, self.headers = f"{base}/v1/agents/{agent_id}/interact", {"X-API-Key": key}
        self.calling, self.done = threading.Event(), threading.Event()
        self.calls = self.failed = 0
        self.statuses: dict[int, int] = {}
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        http = requests.Session()
        while not self.done.is_set():
            if not self.calling.wait(0.1):
                continue
            try:
                status = http.post(self.url, headers=self.headers, json={}, timeout=10).status_code
            except requests.RequestException:
                status = 0
            self.calls += 1
            if status != 200:
                self.failed += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> None:
        self.done.set()
        self._thread.join()


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def update(
    http: requests.Session,
    base: str,
    agent_id: str,
    deployment_id: str,
    image: str,
    phases: list[tuple[float, str]] | None = None,
) -> float:
    """Switch the agent to `image`, restart, wait for the new release to be active; POST → `activated_at`, s.

    With `phases`, it is filled with the update's events: (seconds after the POST, message).
    """
    assert http.patch(f"{base}/v1/agents/{agent_id}", json={"image": image}).status_code == 200
    started = time.time()
    response = http.post(f"{base}/v1/deployments/{deployment_id}/restart")
    assert response.status_code == 202, response.text
    number = response.json()["revision"]

    def active() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"{base}/v1/deployments/{deployment_id}/releases/{number}").json()
        if body["status"] == "failed":
            raise RuntimeError(f"release {number} failed: {body['error']}")
        return body if body["status"] == "active" else None

    release = wait_for(active, 120, f"release {number} active")
    wait_for(lambda: http.get(f"{base}/v1/deployments/{deployment_id}").json()["status"] == "ready", 60, "ready")
    if phases is not None:
        events = http.get(f"{base}/v1/deployments/{deployment_id}/events", params={"limit": 200}).json()["items"]
        phases[:] = sorted(
            (datetime.fromisoformat(event["created_at"]).timestamp() - started, event["message"])
            for event in events
            if datetime.fromisoformat(event["created_at"]).timestamp() >= started
        )
    return datetime.fromisoformat(release["activated_at"]).timestamp() - started


def run(
    *, rounds: int = 3, replicas: int = 5, interval: float = 0.5, tick: float | None = None, surge: int | None = None
) -> dict[str, Any]:
    """Interleaved rounds of a rolling update and of raw sequential starts; medians in seconds, failed calls."""
    client = docker.from_env()
    client.images.get(IMAGE)
    second = f"deploy-test/bench-rollout-{uuid.uuid4().hex[:8]}:v2"
    client.images.build(fileobj=io.BytesIO(f"FROM {IMAGE}\nENV AGENT_VERSION=2\n".encode()), tag=second, rm=True)
    overrides = {"RATE_LIMIT_PER_MINUTE": "100000000"}  # the calling loop is not what is measured
    if tick is not None:
        overrides["RECONCILE_TICK_SECONDS"] = str(tick)
    if surge is not None:
        overrides["ROLLOUT_MAX_SURGE"] = str(surge)
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    process = None
    caller = None
    try:
        process, base = start_service(tempfile.mkdtemp(prefix="deploy-bench-"), namespace=NAMESPACE)
        http = requests.Session()
        credentials = {"email": "bench@example.com", "password": "bench-password"}
        http.post(f"{base}/v1/auth/register", json=credentials)
        token = http.post(f"{base}/v1/auth/login", json=credentials).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        check = {"path": "/health", "interval_seconds": interval, "timeout_seconds": 1.0, "retries": 2}
        agent = http.post(f"{base}/v1/agents", json={"name": "bench-rollout", "image": IMAGE, "health_check": check})
        agent_id = agent.json()["id"]
        key = http.post(f"{base}/v1/agents/{agent_id}/api-key", json={"name": "bench"}).json()["key"]
        deployment = http.post(f"{base}/v1/agents/{agent_id}/deploy", json={"replicas": replicas})
        assert deployment.status_code == 202, deployment.text
        deployment_id = deployment.json()["id"]
        wait_for(lambda: http.get(f"{base}/v1/deployments/{deployment_id}").json()["status"] == "ready", 120, "ready")
        raw_run(client, 1, interval)  # warm-up
        caller = Caller(base, agent_id, key)
        updates, raws, runs = [], [], []
        phases: list[tuple[float, str]] = []
        images = [second, IMAGE]
        for round_index in range(rounds):
            caller.calling.set()
            updates.append(update(http, base, agent_id, deployment_id, images[round_index % 2], phases))
            caller.calling.clear()
            raws.append(raw_run(client, replicas, interval))
            runs.append(runner_run(replicas, interval))
    finally:
        if caller is not None:
            caller.stop()
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        for key_name, value in saved.items():
            if value is None:
                os.environ.pop(key_name, None)
            else:
                os.environ[key_name] = value
        for label in (f"deploy-service.managed={NAMESPACE}", f"deploy-service.managed={RAW_NAMESPACE}", LABEL):
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
        client.images.remove(second, force=True)
    return {
        "update": statistics.median(updates),
        "raw": statistics.median(raws),
        "runner": statistics.median(runs),
        "updates": updates,
        "raws": raws,
        "runs": runs,
        "calls": caller.calls,
        "failed": caller.failed,
        "statuses": caller.statuses,
        "engine": client.version()["Version"],
        "phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.5, help="health check interval, seconds")
    parser.add_argument("--tick", type=float, help="the service's RECONCILE_TICK_SECONDS (default: its default)")
    parser.add_argument("--surge", type=int, help="the service's ROLLOUT_MAX_SURGE (default: its default, 1)")
    parser.add_argument("--phases", action="store_true", help="print the last update's events, timed from the POST")
    args = parser.parse_args()
    figures = run(rounds=args.rounds, replicas=args.replicas, interval=args.interval, tick=args.tick, surge=args.surge)
    tick = "default" if args.tick is None else f"{args.tick:g}s"
    print(f"machine: {os.cpu_count()} cores; engine {figures['engine']}; image {IMAGE}")
    print(
        f"{args.replicas} replicas, health check every {args.interval:g}s, reconcile tick {tick}, "
        f"surge {args.surge or 1}, {args.rounds} rounds"
    )
    ratio = figures["update"] / figures["runner"]
    print(f"{'case':<50}{'value':>10}{'target':>10}")
    print(f"{'rolling update (POST -> release active) s':<50}{figures['update']:>10.3f}")
    print(f"{'the same replicas started one by one, healthy s':<50}{figures['runner']:>10.3f}")
    print(f"{'bare docker-py starts (no limits), healthy s':<50}{figures['raw']:>10.3f}")
    verdict = "ok" if ratio <= 1.5 else "MISSED"
    print(f"{'ratio to the same replicas one by one':<50}{ratio:>10.2f}{'<= 1.5':>10} {verdict}")
    print(f"{'ratio to bare docker-py starts':<50}{figures['update'] / figures['raw']:>10.2f}")
    verdict = "ok" if figures["failed"] == 0 else f"MISSED {figures['statuses']}"
    print(f"{'failed interact calls during the updates':<50}{figures['failed']:>10}{'0':>10} {verdict}")
    print(f"   ({figures['calls']} calls; updates {[round(u, 2) for u in figures['updates']]} s,")
    print(
        f"    one by one {[round(r, 2) for r in figures['runs']]} s, bare {[round(r, 2) for r in figures['raws']]} s)"
    )
    if args.phases:
        for at, message in figures["phases"]:
            print(f"   {at * 1000:>8.1f} ms  {message}")


if __name__ == "__main__":
    main()
