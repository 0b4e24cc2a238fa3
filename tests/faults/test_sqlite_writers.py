"""SQLite under 4 writer processes × 200 writes: no "database is locked", no row lost.

Four real processes (spawned, each with its own app and connection pool) write to one SQLite file at
the same time through the HTTP layer. SQLite allows one writer at a time; a write request must wait for the lock
(`SQLITE_BUSY_TIMEOUT_MS`), never fail. The classic failure is a transaction that *reads* first and then
writes: in WAL mode its read snapshot may be stale by then, and SQLite refuses the upgrade at once
("database is locked") whatever the busy timeout. The service does not hit it: the sqlite3 driver's
transaction control runs reads in autocommit and opens the transaction (`BEGIN`) just before the first
write, which then waits for the lock; what a request read and later relies on is guarded by
constraints and the deployments' version check, not by a snapshot. (With the busy timeout set to 0
this test fails with 500s: it can fail.)

SQLite only: PostgreSQL has row-level locking and runs the concurrency test of `test_lost_update.py`.
"""

from __future__ import annotations

import multiprocessing
import queue
import time

import pytest
from flask import Flask
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import Agent, Evaluation
from tests.factories import AuthActions, make_agent, make_user
from tests.faults import sqlite_writers
from tests.helpers import ProcessGroup

WORKERS = 4
WRITES = 200


def test_four_writer_processes_lose_nothing(
    app: Flask, auth: AuthActions, database_url: str, processes: ProcessGroup
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: the PostgreSQL session has row locks (see test_lost_update.py)")
    owner = make_user(app)
    agent = make_agent(app, owner)
    token = auth.login(owner)["access_token"]
    context = multiprocessing.get_context("spawn")
    ready, go = context.Queue(), context.Event()
    results = context.Queue()
    writers = [
        context.Process(
            target=sqlite_writers.write,
            args=(database_url, token, agent["id"], worker, WRITES, ready, go, results),
            name=f"sqlite-writer-{worker}",
        )
        for worker in range(WORKERS)
    ]
    for process in writers:
        process.start()
        processes.track(process)
    try:
        for _ in writers:  # every writer has built its app: they all start writing at the same moment
            ready.get(timeout=120)
        started = time.monotonic()
        go.set()
        reports = {}
        for _ in writers:
            worker, failures = results.get(timeout=120)
            reports[worker] = failures
        elapsed = time.monotonic() - started
    except queue.Empty:
        pytest.fail("a writer process did not get ready or report within 120 s")
    for process in writers:
        process.join(timeout=30)
    assert {worker: failures for worker, failures in reports.items() if failures} == {}
    assert all(process.exitcode == 0 for process in writers)
    with app.app_context():
        agents = db.session.scalar(select(func.count()).select_from(Agent).where(Agent.owner_id == owner.id))
        evaluations = db.session.scalar(select(func.count()).select_from(Evaluation))
        db.session.rollback()
    assert agents == 1 + WORKERS * WRITES // 2
    assert evaluations == WORKERS * WRITES // 2
    print(f"{WORKERS} processes x {WRITES} writes on SQLite in {elapsed:.1f}s")
