"""The reconciler's plumbing on the real database: leader lock, wake-ups, engine-down backoff, and a loop
that survives every failure of its parts (the lock, a pass, the wake-ups) and stands by while it does
not lead."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from deploy_service.extensions import db
from deploy_service.reconciler import Reconciler
from deploy_service.reconciler.lock import LeaderLock
from deploy_service.reconciler.settings import LoopSettings
from deploy_service.reconciler.wakeup import Waiter
from deploy_service.services import notify
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import settings_for
from tests.factories import AuthActions, make_agent
from tests.fakes import FakeRunner
from tests.faults.conftest import wait_until
from tests.helpers import FAST

QUICK = LoopSettings(standby_retry=0.05, retry_base=0.01, retry_max=0.05, connect_timeout=1, engine_backoff_max=0.05)


def test_only_one_leader_at_a_time(app: Flask) -> None:
    with app.app_context():
        engine = db.engine
    first, second = LeaderLock(engine), LeaderLock(engine)
    try:
        assert first.try_acquire()
        assert first.still_held()
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire()
        assert not first.try_acquire()
    finally:
        first.release()
        second.release()


def test_waiter_wakes_at_once_on_a_local_change(app: Flask) -> None:
    with app.app_context():
        waiter = Waiter(db.engine)
    try:
        notify.local_wakeup.clear()
        threading.Timer(0.1, notify.local_wakeup.set).start()
        started = time.monotonic()
        assert waiter.wait(30) is True
        assert time.monotonic() - started < 2
        assert waiter.wait(0.1) is False
    finally:
        waiter.close()


def test_waiter_wakes_on_another_process_commit(app: Flask) -> None:
    """A commit (SQLite) or NOTIFY (PostgreSQL) from another connection stands for a gunicorn worker."""
    with app.app_context():
        waiter = Waiter(db.engine)
        waiter.wait(0.2)  # settle: forget earlier commits
        notify.local_wakeup.clear()

        def other_process() -> None:
            with app.app_context():
                if db.engine.dialect.name == "postgresql":
                    with db.engine.connect() as connection:
                        connection.execute(text("SELECT pg_notify(:c, '')"), {"c": notify.CHANNEL})
                        connection.commit()
                else:
                    with db.engine.begin() as connection:
                        connection.execute(text("UPDATE alembic_version SET version_num = version_num"))

        try:
            threading.Timer(0.1, other_process).start()
            started = time.monotonic()
            assert waiter.wait(30) is True
            assert time.monotonic() - started < 2
        finally:
            waiter.close()


def test_a_deploy_does_not_wait_for_the_resync(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    slow_resync = FAST.__class__(**{**FAST.__dict__, "resync": 60.0, "tick": 60.0})
    reconciler = Reconciler(app, runner=fake_runner, settings=slow_resync)
    reconciler.start()
    try:
        user, headers = auth.user()
        agent = make_agent(app, user)
        time.sleep(0.2)  # the first pass has run; the loop now sleeps up to 60 s
        started = time.monotonic()
        deployment = client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={}).get_json()
        deadline = time.monotonic() + 5
        status = "deploying"
        while time.monotonic() < deadline and status != "ready":
            status = client.get(f"/v1/deployments/{deployment['id']}", headers=headers).get_json()["status"]
            time.sleep(0.02)
        assert status == "ready"
        assert time.monotonic() - started < 5
    finally:
        reconciler.stop()
        reconciler.close()


def test_engine_outage_backs_off_and_recovers(app: Flask, fake_runner: FakeRunner) -> None:
    reconciler = Reconciler(app, runner=fake_runner, settings=FAST)
    try:
        fake_runner.down = True
        delays = [reconciler.converge_job.run() for _ in range(4)]
        assert delays == sorted(delays) and delays[0] < delays[-1]
        assert delays[-1] <= reconciler.loop_settings.engine_backoff_max
        assert reconciler.engine_failures == 4
        fake_runner.down = False
        reconciler.converge_job.run()
        assert reconciler.engine_failures == 0
    finally:
        reconciler.close()


def _namespace(app: Flask) -> str:
    """The namespace the app's runner labels its containers with; its settings say the same."""
    runner = app.extensions[RUNNER_KEY]
    assert runner.settings == settings_for(app).runner
    namespace: str = runner.settings.namespace
    return namespace


def test_engine_namespace_follows_the_database(make_app: Any, tmp_path: Any) -> None:
    one = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/one.db", ENGINE_NAMESPACE=None)
    again = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/one.db", ENGINE_NAMESPACE=None)
    other = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/two.db", ENGINE_NAMESPACE=None)
    assert _namespace(one) == _namespace(again) == one.config["ENGINE_NAMESPACE"]
    assert _namespace(one).startswith("ds-") and _namespace(one) != _namespace(other)
    assert _namespace(make_app(ENGINE_NAMESPACE="mine")) == "mine"


@pytest.mark.parametrize("flag", ["true", "false"])
def test_reconciler_can_be_disabled_by_config(flag: str) -> None:
    from deploy_service.config import load_config

    assert load_config({"RECONCILER_ENABLED": flag})["RECONCILER_ENABLED"] is (flag == "true")


class FlakyLock(LeaderLock):
    """The real lock, but `try_acquire` raises (as when the database is away) while `failing` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing = threading.Event()
        self.attempts = 0

    def try_acquire(self) -> bool:
        self.attempts += 1
        if self.failing.is_set():
            raise ConnectionRefusedError("the database is away")
        return super().try_acquire()


class FlakyWaiter(Waiter):
    """The real waiter, but `wait` raises while `failing` is set (the first one cannot even be made)."""

    failing = threading.Event()

    def wait(self, timeout: float) -> bool:
        if self.failing.is_set():
            raise OSError("the wake-up connection broke")
        return super().wait(timeout)


def flaky_waiters(engine: Any) -> Callable[[], Waiter]:
    made = []

    def make() -> Waiter:
        made.append(None)
        if len(made) == 1:
            raise OSError("cannot LISTEN at all")
        return FlakyWaiter(engine)

    return make


@dataclass
class Switches:
    """Set one to make that part of the loop fail; clear it to let it recover."""

    lock: FlakyLock
    leadership: threading.Event
    pass_: threading.Event
    wakeups: threading.Event


@pytest.fixture()
def flaky(
    app: Flask, fake_runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Reconciler, Switches]]:
    """A started reconciler whose lock, passes and wake-ups fail while their switch is set."""
    with app.app_context():
        engine = db.engine
    lock = FlakyLock(engine)
    FlakyWaiter.failing.clear()
    reconciler = Reconciler(
        app, runner=fake_runner, settings=FAST, loop_settings=QUICK, lock=lock, waiter=flaky_waiters(engine)
    )
    failing_pass = threading.Event()
    run_pass = reconciler.executor.run_pass

    def flaky_pass() -> float:
        if failing_pass.is_set():
            raise RuntimeError("a defect in the pass")
        return run_pass()

    monkeypatch.setattr(reconciler.executor, "run_pass", flaky_pass)
    reconciler.start()
    try:
        yield reconciler, Switches(lock, lock.failing, failing_pass, FlakyWaiter.failing)
    finally:
        FlakyWaiter.failing.clear()
        reconciler.stop()
        reconciler.close()


def deploy_and_wait_ready(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    user, headers = auth.user()
    agent = make_agent(app, user)
    deployment = client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={}).get_json()
    wait_until(
        lambda: client.get(f"/v1/deployments/{deployment['id']}", headers=headers).get_json()["status"] == "ready",
        timeout=10,
        what="the deployment to be ready",
    )


def test_the_loop_survives_failures_of_leadership_passes_and_wakeups(
    app: Flask, client: FlaskClient, auth: AuthActions, flaky: tuple[Reconciler, Switches]
) -> None:
    reconciler, fail = flaky
    thread = reconciler.thread
    assert thread is not None
    wait_until(lambda: reconciler.leadership.leading() and reconciler.passes >= 1, timeout=10, what="a first pass")

    fail.leadership.set()
    wait_until(lambda: reconciler.outage("leadership").failures >= 3, timeout=10, what="failed lock attempts")
    assert not reconciler.leadership.leading()
    passes = reconciler.passes
    wait_until(lambda: reconciler.outage("leadership").failures >= 6, timeout=10, what="more failed lock attempts")
    assert reconciler.passes == passes  # no pass runs without the lead
    fail.leadership.clear()
    wait_until(lambda: reconciler.leadership.leading() and reconciler.passes > passes, timeout=10, what="the lead")
    assert reconciler.outage("leadership").failures == 0

    fail.pass_.set()
    wait_until(lambda: reconciler.outage("converge").failures >= 3, timeout=10, what="failed passes")
    fail.pass_.clear()
    wait_until(lambda: reconciler.outage("converge").failures == 0, timeout=10, what="a pass that completes")

    fail.wakeups.set()
    wait_until(lambda: reconciler.outage("wake-ups").failures >= 2, timeout=10, what="failed waits")
    fail.wakeups.clear()
    wait_until(lambda: reconciler.outage("wake-ups").failures == 0, timeout=10, what="a wait that works")

    deploy_and_wait_ready(app, client, auth)
    assert reconciler.thread is thread and thread.is_alive()


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    flaky: tuple[Reconciler, Switches], caplog: pytest.LogCaptureFixture
) -> None:
    reconciler, fail = flaky
    caplog.set_level(logging.DEBUG, logger="deploy_service")
    wait_until(lambda: reconciler.passes >= 1, timeout=10, what="a first pass")
    for outage in (1, 2):
        fail.leadership.set()
        attempts = fail.lock.attempts
        wait_until(lambda at=attempts: fail.lock.attempts >= at + 5, timeout=10, what="failed lock attempts")
        fail.leadership.clear()
        wait_until(lambda: reconciler.outage("leadership").failures == 0, timeout=10, what="the lead again")
        mine = [r for r in caplog.records if r.name.startswith("deploy_service.reconciler")]
        started = [r for r in mine if r.levelno == logging.WARNING and "leadership failed" in r.getMessage()]
        ended = [r for r in mine if r.levelno == logging.INFO and "leadership recovered" in r.getMessage()]
        tracebacks = [r for r in mine if r.exc_info and r.levelno >= logging.INFO and "leadership" in r.getMessage()]
        assert (len(started), len(ended), len(tracebacks)) == (outage, outage, outage)
        assert len([r for r in mine if "lost leadership" in r.getMessage()]) == outage
    assert reconciler.outage("leadership").outages == 2


def test_a_standby_does_no_work_until_the_leader_goes(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    with app.app_context():
        engine = db.engine
    leader, lock = LeaderLock(engine), FlakyLock(engine)
    assert leader.try_acquire()
    standby = Reconciler(app, runner=fake_runner, settings=FAST, loop_settings=QUICK, lock=lock)
    standby.start()
    try:
        user, headers = auth.user()
        agent = make_agent(app, user)
        deployment = client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={}).get_json()
        wait_until(lambda: lock.attempts >= 5, timeout=10, what="the standby to try for the lead")
        assert not standby.leadership.leading()
        assert standby.passes == 0
        assert "list_replicas" not in fake_runner.calls and "ensure_image" not in fake_runner.calls
        leader.release()
        wait_until(
            lambda: client.get(f"/v1/deployments/{deployment['id']}", headers=headers).get_json()["status"] == "ready",
            timeout=10,
            what="the standby to take over and converge",
        )
        assert standby.leadership.leading()
    finally:
        leader.release()
        standby.stop()
        standby.close()
