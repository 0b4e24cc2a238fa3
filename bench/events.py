"""Benchmark: a deployment's events page at 1M events against the same page at 1k.

    .venv/bin/python bench/events.py [--events 1000000] [--database-url postgresql+psycopg://...]

Seeds a fresh SQLite file (or empties the given PostgreSQL database) with two deployments of one
user: one with `--events` events, one with 1,000, inserted in bulk as the reconciler would have
recorded them (and the `events_total` counter set to match). Then times, in process and warm, the
median of `GET /v1/deployments/<id>/events?limit=50` for each, and the same with a filter
(`event_type`, which still counts its matches). Target: the unfiltered page at 1M ≤ 2× at 1k.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, text  # noqa: E402

from bench.metrics import EVENTS_TOTAL_BACKFILL, bench_app, chunks, timed  # noqa: E402
from deploy_service.extensions import db  # noqa: E402
from deploy_service.models import Agent, Deployment, DeploymentEvent  # noqa: E402


def seed(owner_id: str, events: int) -> tuple[str, str]:
    now = datetime.now(UTC)
    ids = []
    for name in ("big", "small"):
        agent = Agent(owner_id=owner_id, name=name, image="deploy-test/http-agent:latest", status="deployed")
        db.session.add(agent)
        db.session.flush()
        deployment = Deployment(agent_id=agent.id, owner_id=owner_id, status="ready", config={}, image=agent.image)
        db.session.add(deployment)
        db.session.flush()
        ids.append(deployment.id)
    big, small = ids

    def event(deployment_id: str) -> Any:
        def make(n: int) -> dict[str, Any]:
            return {
                "id": str(uuid.uuid4()),
                "deployment_id": deployment_id,
                "event_type": "container_restarted" if n % 100 == 0 else "health_passed",
                "status": "ready",
                "message": f"event {n}",
                "data": {"replica": n % 10},
                "created_at": now - timedelta(milliseconds=n),
            }

        return make

    for rows in chunks(events, event(big)):
        db.session.execute(insert(DeploymentEvent), rows)
    for rows in chunks(1000, event(small)):
        db.session.execute(insert(DeploymentEvent), rows)
    db.session.execute(text(EVENTS_TOTAL_BACKFILL))
    db.session.execute(text("ANALYZE"))
    db.session.commit()
    return big, small


def run(*, events: int = 1_000_000, database_url: str | None = None) -> dict[str, float]:
    """Seed and time; returns milliseconds per case."""
    url = database_url or f"sqlite:///{tempfile.mkdtemp(prefix='deploy-bench-events-')}/bench.db"
    app, client, headers, owner = bench_app(url, RECONCILER_ENABLED=False, LOG_LEVEL="WARNING")
    with app.app_context():
        big, small = seed(owner, events)
    page = "/events?limit=50"
    filtered = "/events?limit=50&event_type=container_restarted"
    return {
        "big": timed(client, f"/v1/deployments/{big}{page}", headers, rounds=15),
        "small": timed(client, f"/v1/deployments/{small}{page}", headers, rounds=15),
        "big_filtered": timed(client, f"/v1/deployments/{big}{filtered}", headers, rounds=15),
        "small_filtered": timed(client, f"/v1/deployments/{small}{filtered}", headers, rounds=15),
        "events": float(events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    figures = run(events=args.events, database_url=args.database_url)
    backend = (args.database_url or "sqlite").split(":", 1)[0]
    print(f"{backend}: events page of 50, a deployment with {args.events} events against one with 1000")
    big_label = f"{args.events // 1000:,}k ms" if args.events < 1_000_000 else f"{args.events / 1e6:g}M ms"
    print(f"{'page':<34}{big_label:>9}{'1k ms':>9}{'ratio':>8}")
    for name, big, small in (
        ("newest first", figures["big"], figures["small"]),
        ("filtered by event_type (counted)", figures["big_filtered"], figures["small_filtered"]),
    ):
        print(f"{name:<34}{big:>9.2f}{small:>9.2f}{big / small:>8.2f}")
    verdict = "ok" if figures["big"] / figures["small"] <= 2 else "MISSED"
    print(f"target: unfiltered page at 1M <= 2x at 1k ({args.events:,} events here): {verdict}")


if __name__ == "__main__":
    main()
