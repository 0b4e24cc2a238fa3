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

WORKERS = 4
WRITES = 200


def test_four_writer_processes_lose_nothing(app: Flask, auth: AuthActions, database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: the PostgreSQL session has row locks (see test_lost_update.py)")
    owner = make_user(app)
    agent = make_agent(app, owner)
    token = auth.login(owner)["access_token"]
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    processes = [
        context.Process(
            target=sqlite_writers.write,
            args=(database_url, token, agent["id"], worker, WRITES, go, results),
            name=f"sqlite-writer-{worker}",
        )
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        time.sleep(0.5)  # let the interpreters import while the go signal is pending; they also wait for it
        started = time.monotonic()
        go.set()
        reports = {}
        for _ in processes:
            worker, failures = results.get(timeout=120)
            reports[worker] = failures
        elapsed = time.monotonic() - started
    except queue.Empty:
        pytest.fail("a writer process did not report within 120 s")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    assert {worker: failures for worker, failures in reports.items() if failures} == {}
    assert all(process.exitcode == 0 for process in processes)
    with app.app_context():
        agents = db.session.scalar(select(func.count()).select_from(Agent).where(Agent.owner_id == owner.id))
        evaluations = db.session.scalar(select(func.count()).select_from(Evaluation))
        db.session.rollback()
    assert agents == 1 + WORKERS * WRITES // 2
    assert evaluations == WORKERS * WRITES // 2
    print(f"{WORKERS} processes x {WRITES} writes on SQLite in {elapsed:.1f}s")
