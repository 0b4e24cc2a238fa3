"""Benchmark: the metrics and telemetry endpoints on a large database.

    .venv/bin/python bench/metrics.py [--deployments 100000] [--events 1000000] [--evaluations 1000000]

Seeds a fresh SQLite file (or `--database-url postgresql+psycopg://...`, which it empties first) with
one user owning most of the data, then times, in process and warm, the median of several calls of:
`GET /v1/deployments/metrics` (system-wide), `GET /v1/deployments/<id>/metrics`,
`GET /v1/evaluations/stats`, `GET /v1/agents/<id>/stats`, and an events page at 1M events against the
same page at 1k. Prints the figures; no targets are asserted here (docs/performance.md will hold them).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from deploy_service import create_app  # noqa: E402
from deploy_service.extensions import db  # noqa: E402
from deploy_service.models import Agent, Deployment, DeploymentEvent, Evaluation, Instance  # noqa: E402

BATCH = 20_000
EVENTS_TOTAL_BACKFILL = (
    "UPDATE deployments SET events_total = "
    "(SELECT count(*) FROM deployment_events WHERE deployment_events.deployment_id = deployments.id)"
)
STATUSES = ["ready"] * 6 + ["running", "failed", "stopped", "killed", "killed", "killed"]


def chunks(total: int, make: Any) -> Any:
    for start in range(0, total, BATCH):
        yield [make(index) for index in range(start, min(start + BATCH, total))]


def seed(args: argparse.Namespace, owner_id: str) -> tuple[str, str, str]:
    now = datetime.now(UTC)
    agent_ids = [str(uuid.uuid4()) for _ in range(1000)]
    db.session.execute(
        insert(Agent),
        [
            {
                "id": agent_id,
                "owner_id": owner_id,
                "name": f"agent-{n}",
                "image": "busybox",
                "port": 8080,
                "invoke_path": "/invoke",
                "env": {},
                "secrets": {},
                "resources": {"cpu": 0.5, "memory_mb": 256},
                "read_only_rootfs": True,
                "status": "deployed",
                "created_at": now,
                "updated_at": now,
            }
            for n, agent_id in enumerate(agent_ids)
        ],
    )
    deployment_ids = [str(uuid.uuid4()) for _ in range(args.deployments)]
    live_agent = set()

    def deployment(n: int) -> dict[str, Any]:
        status = STATUSES[n % len(STATUSES)]
        agent = agent_ids[n % len(agent_ids)]
        if status != "killed":
            if agent in live_agent:
                status = "killed"
            else:
                live_agent.add(agent)
        created = now - timedelta(minutes=n % 5000)
        return {
            "id": deployment_ids[n],
            "agent_id": agent,
            "owner_id": owner_id,
            "status": status,
            "desired_state": "running",
            "replicas_desired": 2,
            "generation": 1,
            "revision": 1,
            "image": "busybox",
            "image_ready": True,
            "config": {"port": 8080},
            "created_at": created,
            "updated_at": created,
            "started_at": created + timedelta(seconds=1 + n % 30) if status != "failed" else None,
            "version": 1,
        }

    for rows in chunks(args.deployments, deployment):
        db.session.execute(insert(Deployment), rows)
    target = next(d for n, d in enumerate(deployment_ids) if STATUSES[n % len(STATUSES)] == "ready")
    db.session.execute(
        insert(Instance),
        [
            {
                "id": str(uuid.uuid4()),
                "deployment_id": target,
                "index": i,
                "container_id": f"c{i}",
                "generation": 1,
                "status": "running",
                "restarts": 0,
                "recent_restarts": 0,
                "health_failures": 0,
                "healthy": True,
            }
            for i in range(2)
        ],
    )
    small = deployment_ids[-1]

    def event(n: int) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "deployment_id": target if n % 2 else deployment_ids[n % len(deployment_ids)],
            "event_type": "container_restarted" if n % 50 == 0 else "status_changed",
            "status": "ready",
            "message": "m",
            "data": {},
            "created_at": now - timedelta(seconds=n),
        }

    for rows in chunks(args.events, event):
        db.session.execute(insert(DeploymentEvent), rows)
    db.session.execute(
        insert(DeploymentEvent),
        [
            {
                "id": str(uuid.uuid4()),
                "deployment_id": small,
                "event_type": "status_changed",
                "status": "ready",
                "message": "m",
                "data": {},
                "created_at": now - timedelta(seconds=n),
            }
            for n in range(1000)
        ],
    )

    def evaluation(n: int) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "agent_id": agent_ids[n % len(agent_ids)],
            "prompt": "p",
            "response": "r",
            "semantic_drift": random.random(),
            "uncertainty": random.random(),
            "factual_support": random.random(),
            "hallucinated": n % 7 == 0,
            "latency_sec": random.random(),
            "throughput_qps": 10.0,
            "created_at": now - timedelta(seconds=n % 600_000),
        }

    for rows in chunks(args.evaluations, evaluation):
        db.session.execute(insert(Evaluation), rows)
    db.session.execute(text(EVENTS_TOTAL_BACKFILL))  # the counter record_event keeps, for rows seeded around it
    db.session.commit()
    return target, small, agent_ids[0]


def bench_app(url: str, **config: Any) -> tuple[Flask, FlaskClient, dict[str, str], str]:
    """An app on a freshly migrated database at `url`, with a logged-in user: (app, client, headers, user id)."""
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "PASSWORD_HASH_TIME_COST": 1,
            "PASSWORD_HASH_MEMORY_KIB": 8,
            "RATELIMIT_ENABLED": False,
            **config,
        }
    )
    with app.app_context():
        if url.startswith("postgresql"):
            db.drop_all()
            with db.engine.begin() as connection:
                connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        upgrade()
    client = app.test_client()
    client.post("/v1/auth/register", json={"email": "bench@example.com", "password": "bench-password"})
    tokens = client.post("/v1/auth/login", json={"email": "bench@example.com", "password": "bench-password"}).get_json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    owner = client.get("/v1/auth/me", headers=headers).get_json()["id"]
    return app, client, headers, owner


def timed(client: Any, path: str, headers: dict[str, str], rounds: int = 7) -> float:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, (path, response.get_json())
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.get(path, headers=headers)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--evaluations", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='deploy-bench-metrics-')}/bench.db"
    app, client, headers, owner = bench_app(url)
    started = time.perf_counter()
    with app.app_context():
        target, small, agent = seed(args, owner)
        db.session.execute(text("ANALYZE"))
        db.session.commit()
    seeding = time.perf_counter() - started

    figures = {
        "GET /v1/deployments/metrics": timed(client, "/v1/deployments/metrics", headers),
        "GET /v1/deployments/<id>/metrics": timed(client, f"/v1/deployments/{target}/metrics", headers),
        "GET /v1/evaluations/stats?days=7": timed(client, "/v1/evaluations/stats?days=7", headers),
        "GET /v1/evaluations/stats (one agent)": timed(client, f"/v1/evaluations/stats?agent_id={agent}", headers),
        "GET /v1/agents/<id>/stats": timed(client, f"/v1/agents/{agent}/stats", headers),
        "events page, deployment with ~500k": timed(client, f"/v1/deployments/{target}/events?limit=50", headers),
        "events page, deployment with 1k": timed(client, f"/v1/deployments/{small}/events?limit=50", headers),
    }
    backend = url.split(":", 1)[0]
    print(
        f"{backend}: {args.deployments} deployments, {args.events} events, {args.evaluations} evaluations "
        f"(seeded in {seeding:.0f} s)"
    )
    for name, milliseconds in figures.items():
        print(f"{name:<42}{milliseconds:>9.1f} ms")
    big, little = figures["events page, deployment with ~500k"], figures["events page, deployment with 1k"]
    print(f"{'events page: big / small':<42}{big / little:>9.2f} x (target <= 2)")


if __name__ == "__main__":
    main()
