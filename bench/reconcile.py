"""Benchmark: how long one reconcile pass takes over 200 running containers on the real engine.

Run by hand on a machine with an engine (scripts/ensure_docker.sh) and the test images
(tests/integration/images/build.sh):

    .venv/bin/python bench/reconcile.py [--deployments 20] [--replicas 10] [--passes 20]

It builds the app in-process on a fresh SQLite file with the real Docker runner (host networking, its
own engine namespace), deploys `deployments × replicas` containers of the http test agent through the
service layer, runs passes until every deployment is `ready`, and then times steady-state passes:
one engine list call, the database read, the per-deployment convergence and alert rules, and a
commit per deployment. Health checks are on (HTTP, interval 1 s) in a second series, so the cost of
probing 200 replicas shows too. Resource sampling is pushed out of the window (it is a separate,
periodic job with its own cost, measured in bench/metrics.py). Target: < 100 ms a pass.
Its containers are removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask_migrate import upgrade  # noqa: E402

from deploy_service import create_app  # noqa: E402
from deploy_service.extensions import db  # noqa: E402
from deploy_service.models import Deployment, Principal  # noqa: E402
from deploy_service.reconciler import Reconciler  # noqa: E402
from deploy_service.services import agents as agent_service  # noqa: E402
from deploy_service.services import deployments as deployment_service  # noqa: E402
from deploy_service.services.auth import create_user  # noqa: E402

IMAGE = "deploy-test/http-agent:latest"
NAMESPACE = "bench-reconcile"


def build_app(workdir: str) -> Any:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir}/bench.db",
            "ENGINE_NAMESPACE": NAMESPACE,
            "DOCKER_NETWORK_MODE": "host",
            "RECONCILER_ENABLED": False,
            "RATELIMIT_ENABLED": False,
            "STARTUP_GRACE_SECONDS": 0.5,
            "METRICS_SAMPLE_SECONDS": 3600,
            "CONTAINER_STOP_TIMEOUT": 1,
            "PASSWORD_HASH_TIME_COST": 1,
            "PASSWORD_HASH_MEMORY_KIB": 8,
            "LOG_LEVEL": "WARNING",
        }
    )
    with app.app_context():
        upgrade()
    return app


def deploy_all(app: Any, *, deployments: int, replicas: int, health_check: bool) -> list[str]:
    ids = []
    with app.app_context():
        owner = create_user(email=f"bench-{time.time_ns()}@example.com", password="bench-password")
        actor = Principal(
            id=owner.id,
            email=owner.email,
            full_name=owner.full_name,
            role=owner.role,
            is_active=owner.is_active,
            created_at=owner.created_at,
        )
        for number in range(deployments):
            payload: dict[str, Any] = {"name": f"bench-{number}-{time.time_ns()}", "image": IMAGE}
            if health_check:
                payload["health_check"] = {"path": "/health", "interval_seconds": 1, "timeout_seconds": 2}
            agent = agent_service.create_agent(actor, payload)
            ids.append(deployment_service.create_deployment(actor, agent.id, replicas=replicas).id)
    return ids


def converge(app: Any, reconciler: Reconciler, ids: list[str], *, timeout: float = 300) -> float:
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconciler.run_once()
        with app.app_context():
            statuses = [db.session.get_one(Deployment, i).status for i in ids]
            db.session.remove()
        if all(status == "ready" for status in statuses):
            return time.perf_counter() - started
        if "failed" in statuses:
            raise RuntimeError("a deployment failed while converging")
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout} s: {statuses}")


def time_passes(reconciler: Reconciler, passes: int, *, pause: float) -> list[float]:
    timings = []
    for _ in range(passes):
        time.sleep(pause)
        started = time.perf_counter()
        reconciler.run_once()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def remove_containers(client: docker.DockerClient) -> None:
    for row in client.api.containers(all=True, filters={"label": f"deploy-service.managed={NAMESPACE}"}):
        try:
            client.api.remove_container(row["Id"], force=True)
        except docker.errors.NotFound:
            pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both series (without and with health checks); returns pass timings (ms) and convergence times."""
    client = docker.from_env()
    client.images.get(IMAGE)
    figures: dict[str, Any] = {"containers": args.deployments * args.replicas}
    remove_containers(client)
    try:
        for health_check in (False, True):
            workdir = tempfile.mkdtemp(prefix="deploy-bench-reconcile-")
            app = build_app(workdir)
            reconciler = Reconciler(app)
            ids = deploy_all(app, deployments=args.deployments, replicas=args.replicas, health_check=health_check)
            figures[f"converge_s_{health_check}"] = converge(app, reconciler, ids)
            timings = time_passes(reconciler, args.passes, pause=0.05)
            figures[f"passes_ms_{health_check}"] = timings
            reconciler.close()
            remove_containers(client)
    finally:
        remove_containers(client)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    figures = run(args)
    print(f"{figures['containers']} containers ({args.deployments} deployments x {args.replicas} replicas), SQLite")
    print(f"{'case':<44}{'median ms':>10}{'p95 ms':>9}{'target':>9}")
    for health_check, name in ((False, "steady pass"), (True, "steady pass, HTTP health checks every 1 s")):
        timings = sorted(figures[f"passes_ms_{health_check}"])
        median = statistics.median(timings)
        p95 = timings[int(len(timings) * 0.95) - 1]
        verdict = "ok" if median < 100 else "MISSED"
        print(f"{name:<44}{median:>10.1f}{p95:>9.1f}{'< 100':>9} {verdict}")
    print(f"time to converge {figures['containers']} replicas from nothing: {figures['converge_s_False']:.1f} s")


if __name__ == "__main__":
    main()
