"""Fixtures shared by every test.

The database is real: a SQLite file by default, or PostgreSQL when `TEST_DATABASE_URL` is set. Its
schema is built once per session by the Alembic migrations (so every run also proves them), and
every table is emptied after each test, so each test starts from a fresh database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import text

from deploy_service import create_app
from deploy_service.extensions import db
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import EXTENSION_KEY as SETTINGS_KEY
from deploy_service.settings import Settings, settings_for, settings_from
from tests.factories import AuthActions
from tests.fakes import FakeRunner

# Fast password hashing for tests; production defaults are in config.py.
TEST_CONFIG: dict[str, Any] = {
    "TESTING": True,
    "ENVIRONMENT": "development",
    "SECRET_KEY": "test-secret-key-" + "0123456789abcdef" * 4,
    "PASSWORD_HASH_TIME_COST": 1,
    "PASSWORD_HASH_MEMORY_KIB": 8,
    "ALLOWED_ORIGINS": ["https://app.example.com"],
    "LOG_LEVEL": "DEBUG",
    "RATELIMIT_ENABLED": False,
}


def _drop_everything(app: Flask) -> None:
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def make_app(database_url: str) -> Iterator[Any]:
    """Build another app on the test database (e.g. a second 'process'), with config overrides."""

    def factory(**overrides: Any) -> Flask:
        return create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url, **overrides})

    yield factory


@pytest.fixture(scope="session")
def app(make_app: Any) -> Iterator[Flask]:
    app = make_app()
    _drop_everything(app)
    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(autouse=True)
def _fresh_database(app: Flask) -> Iterator[None]:
    yield
    with app.app_context():
        db.session.rollback()
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def auth(app: Flask, client: FlaskClient) -> AuthActions:
    return AuthActions(app, client)


@pytest.fixture()
def fake_runner(app: Flask) -> Iterator[FakeRunner]:
    """Swap the app's runner for the in-memory one for this test."""
    real = app.extensions[RUNNER_KEY]
    fake = FakeRunner()
    app.extensions[RUNNER_KEY] = fake
    yield fake
    app.extensions[RUNNER_KEY] = real


@pytest.fixture()
def configure(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Change configuration keys of the shared app for this test, e.g. `configure(WEBHOOK_MAX_ATTEMPTS=3)`.

    The app's typed settings are built again from its config with the keys changed (and checked, as
    `create_app` checks them); the keys are set in `app.config` too, for the reconciler modules that
    still read it there. Both are restored after the test. The runner is built once by `create_app`:
    a runner setting cannot change here (use `make_app`), and asking for one fails the test.
    """

    def apply(**overrides: Any) -> Settings:
        before = settings_for(app)
        for key, value in overrides.items():
            monkeypatch.setitem(app.config, key, value)
        settings = settings_from(app.config)
        assert settings.runner == before.runner, "runner settings are fixed by create_app: use make_app"
        monkeypatch.setitem(app.extensions, SETTINGS_KEY, settings)
        return settings

    return apply
