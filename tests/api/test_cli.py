"""`flask create-admin`."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import User
from tests.factories import make_user


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
