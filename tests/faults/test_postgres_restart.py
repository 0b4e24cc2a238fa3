"""PostgreSQL restarts under a running app: the very next request succeeds.

The test brings its own server (`PostgresServer`), so it runs in both sessions of the suite. An app
with a pool of 3 connections serves requests until all 3 are pooled, and one request holds a pooled
connection (it has read, and waits) while the server is restarted with `pg_ctl restart -m fast`, which
terminates every session:

- the very next request succeeds, and so do concurrent ones, while nothing has yet noticed the
  restart: every pooled connection is dead, and `pool_pre_ping` tests each at checkout and replaces it;
- the request that held its connection across the restart fails with the contract's 500 body (its
  connection died under it; nothing can save that one), and it leaves nothing broken behind: the
  requests after it succeed too.

With `pool_pre_ping` off the first request after the restart fails (500), so this test can fail.

The reconciler's own connections die too: its leader lock (a session advisory lock) is lost and taken
again, and its `LISTEN` connection is reopened, so another process's `NOTIFY` wakes it again (before,
it fell back to periodic resyncs for good).

And the reconciler outlives an outage: PostgreSQL stopped for longer than the standby retry while a
deployment runs on the real engine, then started again. Its loop keeps trying for the lead (before,
the first failed attempt ended its thread for good, and nothing converged until the service was
restarted); once the database is back, the same thread leads again, a new deployment converges, and a
container killed during the outage is replaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from flask import Flask, jsonify
from flask_migrate import upgrade
from sqlalchemy import text

from deploy_service import create_app
from deploy_service.extensions import db
from deploy_service.reconciler import Reconciler
from deploy_service.reconciler.lock import LeaderLock
from deploy_service.reconciler.settings import LoopSettings
from deploy_service.reconciler.wakeup import Waiter
from deploy_service.runner import DockerRunner
from deploy_service.runner.settings import RunnerSettings
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.services.notify import CHANNEL, local_wakeup
from tests.conftest import TEST_CONFIG
from tests.faults.conftest import FAST_HEALTH, HTTP_AGENT, EngineView
from tests.faults.postgres_server import PostgresServer, find_bindir
from tests.helpers import ENGINE, port_range, wait_until

POOL = 3


@pytest.fixture()
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own (it restarts it), with a database `faults`."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)", pytrace=False)
    server = PostgresServer(bindir)
    try:
        server.start()
        with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute("CREATE DATABASE faults")
        yield server
    finally:
        server.stop()


@pytest.fixture()
def pg_app(postgres_server: PostgresServer) -> Iterator[tuple[Flask, dict[str, threading.Event]]]:
    """An app on the private server, plus a route that holds its pooled connection until told to go on."""
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": postgres_server.url("faults"), "DB_POOL_SIZE": POOL})
    holding, release = threading.Event(), threading.Event()

    def hold() -> Any:
        db.session.execute(text("SELECT 1"))  # the session now holds a pooled connection
        holding.set()
        release.wait(30)
        db.session.execute(text("SELECT 1"))
        return jsonify({"held": True})

    app.add_url_rule("/test/hold", "hold", hold)
    with app.app_context():
        upgrade()
    yield app, {"holding": holding, "release": release}
    with app.app_context():
        db.engine.dispose()


def _concurrently(app: Flask, path: str, headers: dict[str, str], count: int) -> list[Any]:
    barrier = threading.Barrier(count)
    answers: list[Any] = [None] * count

    def call(slot: int) -> None:
        barrier.wait(timeout=10)
        answers[slot] = app.test_client().get(path, headers=headers)

    threads = [threading.Thread(target=call, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return answers


def test_the_request_after_a_postgres_restart_succeeds(
    pg_app: tuple[Flask, dict[str, threading.Event]], postgres_server: PostgresServer
) -> None:
    app, events = pg_app
    client = app.test_client()
    credentials = {"email": "pg@example.com", "password": "pg-password"}
    assert client.post("/v1/auth/register", json=credentials).status_code == 201
    headers = {"Authorization": f"Bearer {client.post('/v1/auth/login', json=credentials).get_json()['access_token']}"}
    before = client.post("/v1/agents", headers=headers, json={"name": "before", "image": "busybox:1"})
    assert before.status_code == 201
    # An agent by id is read through the ORM session, whose pool this is (the lists are prepared reads on a
    # pool of their own: tests/api/test_rawdb.py restarts the server under those).
    agent_path = f"/v1/agents/{before.get_json()['id']}"
    for _ in range(5):  # until the pool holds all its connections
        assert all(a.status_code == 200 for a in _concurrently(app, agent_path, headers, POOL))
        with app.app_context():
            if db.engine.pool.checkedin() >= POOL:  # type: ignore[attr-defined]
                break
    with app.app_context():
        assert db.engine.pool.checkedin() >= POOL - 1  # type: ignore[attr-defined]

    held: list[Any] = []
    holder = threading.Thread(target=lambda: held.append(app.test_client().get("/test/hold")))
    holder.start()
    assert events["holding"].wait(10)
    postgres_server.restart()

    # Before anything has noticed the restart (which would invalidate the whole pool): every pooled
    # connection is dead, and pre-ping replaces each at checkout.
    after = client.get(agent_path, headers=headers)
    assert after.status_code == 200, after.get_json()
    assert after.get_json()["name"] == "before"
    assert all(a.status_code == 200 for a in _concurrently(app, agent_path, headers, POOL - 1))

    events["release"].set()
    holder.join(timeout=30)
    assert held[0].status_code == 500
    assert held[0].get_json() == {"success": False, "error": "internal_error", "message": "An internal error occurred."}

    created = client.post("/v1/agents", headers=headers, json={"name": "after", "image": "busybox:1"})
    assert created.status_code == 201, created.get_json()
    assert all(a.status_code == 200 for a in _concurrently(app, agent_path, headers, POOL))
    listed = client.get("/v1/agents", headers=headers)
    assert [agent["name"] for agent in listed.get_json()["items"]] == ["after", "before"]
    assert client.get("/health/db").status_code == 200


def test_the_reconciler_keeps_its_lock_and_wakeups_across_a_postgres_restart(
    pg_app: tuple[Flask, dict[str, threading.Event]], postgres_server: PostgresServer
) -> None:
    """The leader lock is taken again, and `NOTIFY` from another process wakes the reconciler again."""
    app, _ = pg_app
    with app.app_context():
        engine = db.engine
    lock, waiter = LeaderLock(engine), Waiter(engine)
    other_process = postgres_server.url("faults").replace("+psycopg", "")

    def notify() -> None:
        with psycopg.connect(other_process, autocommit=True) as connection:
            connection.execute(f"NOTIFY {CHANNEL}")

    def woken_within(seconds: float) -> bool:
        local_wakeup.clear()
        started = time.monotonic()
        return waiter.wait(seconds) and time.monotonic() - started < seconds

    try:
        assert lock.try_acquire()
        notify()
        assert woken_within(5)
        postgres_server.restart()
        assert not lock.still_held()  # its session died with the server
        assert lock.try_acquire()  # and it leads again
        wait_until(lambda: woken_within(0.2) or None, timeout=10, what="the LISTEN connection to come back")
        assert not woken_within(0.3)  # nothing pending: a wake-up now can only be the next NOTIFY
        notify()
        assert woken_within(5)
    finally:
        waiter.close()
        lock.release()


SETTINGS = replace(
    ENGINE,
    resync=1.0,
    progress_deadline=60.0,
    restart_budget=5,
    stop_timeout=1.0,
    workers=4,
    port_range=port_range(28000, 28999),
)
LOOP = LoopSettings(standby_retry=0.2, retry_base=0.1, retry_max=0.5, connect_timeout=2, engine_backoff_max=0.5)


def test_the_reconciler_outlives_a_postgres_outage_longer_than_the_standby_retry(
    pg_app: tuple[Flask, dict[str, threading.Event]],
    postgres_server: PostgresServer,
    engine_view: EngineView,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _ = pg_app
    runner = DockerRunner(RunnerSettings(network_mode="host", namespace=engine_view.namespace, docker_timeout=10))
    monkeypatch.setitem(app.extensions, RUNNER_KEY, runner)
    client = app.test_client()
    credentials = {"email": "outage@example.com", "password": "outage-password"}
    assert client.post("/v1/auth/register", json=credentials).status_code == 201
    headers = {"Authorization": f"Bearer {client.post('/v1/auth/login', json=credentials).get_json()['access_token']}"}

    def deploy(name: str) -> str:
        agent = client.post(
            "/v1/agents", headers=headers, json={"name": name, "image": HTTP_AGENT, "health_check": FAST_HEALTH}
        )
        assert agent.status_code == 201, agent.get_json()
        deployment = client.post(f"/v1/agents/{agent.get_json()['id']}/deploy", headers=headers, json={})
        assert deployment.status_code == 202, deployment.get_json()
        return str(deployment.get_json()["id"])

    def running(deployment_id: str) -> str | None:
        """The id of the deployment's one running container, once it is ready and the database names it."""
        body = client.get(f"/v1/deployments/{deployment_id}", headers=headers).get_json()
        containers = engine_view.containers(deployment_id)
        if body["status"] != "ready" or [c.state for c in containers] != ["running"]:
            return None
        if [i["container_id"] for i in body["instances"]] != [containers[0].id]:
            return None
        return str(containers[0].id)

    reconciler = Reconciler(app, runner=runner, settings=SETTINGS, loop_settings=LOOP)
    thread = reconciler.start()
    try:
        before = deploy("before")
        killed = wait_until(lambda: running(before), timeout=60, what="the first deployment to be ready")

        postgres_server.halt()
        halted = time.monotonic()
        wait_until(lambda: not reconciler.leadership.leading(), timeout=30, what="the lead to be lost")
        wait_until(
            lambda: (
                reconciler.outage("leadership").failures >= 4 and time.monotonic() - halted > 3 * LOOP.standby_retry
            ),
            timeout=30,
            what="an outage longer than the standby retry",
        )
        engine_view.client.api.kill(killed)  # while nothing can write down what happened
        postgres_server.resume()

        after = deploy("after")
        wait_until(lambda: running(after), timeout=60, what="a new deployment to converge after the outage")
        replaced = wait_until(
            lambda: (found := running(before)) != killed and found, timeout=60, what="the killed container replaced"
        )
        assert replaced != killed
        assert reconciler.thread is thread and thread.is_alive()
        assert reconciler.leadership.leading()
        assert reconciler.outage("leadership").failures == 0
    finally:
        reconciler.stop()
        reconciler.close()
        runner.close()
