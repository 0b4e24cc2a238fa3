"""The reconciler's plumbing on the real database: leader lock, wake-ups, engine-down backoff."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from deploy_service.extensions import db
from deploy_service.reconciler import Reconciler
from deploy_service.reconciler.lock import LeaderLock
from deploy_service.reconciler.wakeup import Waiter
from deploy_service.services import notify
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import settings_for
from tests.api.test_deployments import FAST
from tests.factories import AuthActions, make_agent
from tests.fakes import FakeRunner


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
        delays = [reconciler._step() for _ in range(4)]
        assert delays == sorted(delays) and delays[0] < delays[-1]
        assert delays[-1] <= app.config["ENGINE_BACKOFF_MAX_SECONDS"]
        assert reconciler.engine_failures == 4
        fake_runner.down = False
        reconciler._step()
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
