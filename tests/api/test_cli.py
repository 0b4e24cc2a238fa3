"""`flask create-admin` and `flask reconcile`."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import User
from deploy_service.reconciler import Reconciler
from tests.factories import make_user
from tests.fakes import FakeRunner
from tests.faults.conftest import wait_until


def _user(app: Flask, email: str) -> User | None:
    with app.app_context():
        return db.session.scalar(select(User).where(User.email == email))


def test_create_admin_creates_an_admin_that_can_log_in(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "--email", "Root@Example.com", "--password", "super-secret-1"])
    assert result.exit_code == 0, result.output
    assert "Created admin root@example.com" in result.output
    user = _user(app, "root@example.com")
    assert user is not None and user.role == "admin"
    login = app.test_client().post("/v1/auth/login", json={"email": "root@example.com", "password": "super-secret-1"})
    assert login.status_code == 200


def test_create_admin_promotes_an_existing_user(app: Flask) -> None:
    existing = make_user(app)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "--email", existing.email, "--password", "new-password-1"])
    assert result.exit_code == 0, result.output
    user = _user(app, existing.email)
    assert user is not None and user.role == "admin"
    login = app.test_client().post("/v1/auth/login", json={"email": existing.email, "password": "new-password-1"})
    assert login.status_code == 200


def test_create_admin_takes_password_from_environment_and_checks_length(app: Flask) -> None:
    runner = app.test_cli_runner()
    short = runner.invoke(args=["create-admin", "--email", "a@example.com"], env={"ADMIN_PASSWORD": "short"})
    assert short.exit_code != 0
    assert _user(app, "a@example.com") is None
    ok = runner.invoke(args=["create-admin", "--email", "a@example.com"], env={"ADMIN_PASSWORD": "long-enough-pw"})
    assert ok.exit_code == 0, ok.output


def sigterm_after(seconds: float) -> threading.Timer:
    """Send this process SIGTERM after `seconds` (the command handles it while it runs)."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    return timer


@pytest.fixture()
def sigterm_handler() -> Iterator[object]:
    """The SIGTERM handler before the command; restored if the command did not restore it."""
    before = signal.getsignal(signal.SIGTERM)
    yield before
    signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("ending", ["raises", "returns"])
def test_reconcile_exits_non_zero_when_its_loop_ends_unexpectedly(
    app: Flask, fake_runner: FakeRunner, monkeypatch: pytest.MonkeyPatch, sigterm_handler: object, ending: str
) -> None:
    def run_forever(self: Reconciler) -> None:
        if ending == "raises":
            raise RuntimeError("a defect that escaped the loop")

    monkeypatch.setattr(Reconciler, "run_forever", run_forever)
    watchdog = sigterm_after(10)  # a command that waits for a signal regardless ends here, with 0
    try:
        result = app.test_cli_runner().invoke(args=["reconcile"])
    finally:
        watchdog.cancel()
    assert result.exit_code == 1, result.output
    assert "the reconciler loop ended unexpectedly" in result.output
    assert signal.getsignal(signal.SIGTERM) == sigterm_handler


def test_reconcile_runs_passes_and_exits_zero_on_sigterm(
    app: Flask, fake_runner: FakeRunner, sigterm_handler: object
) -> None:
    def terminate_after_a_pass() -> None:
        wait_until(lambda: "list_replicas" in fake_runner.calls, timeout=10, what="a pass")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_after_a_pass, daemon=True).start()
    result = app.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    assert "reconciler running" in result.output
    assert signal.getsignal(signal.SIGTERM) == sigterm_handler
