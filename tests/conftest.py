"""Fixtures shared by every test, and the markers that say what a test needs.

The database is real: a SQLite file by default, or, when `TEST_DATABASE_URL` is set, a PostgreSQL
database of this run's own on that server (created with a unique name, dropped at the end). Its
schema is built once per session by the Alembic migrations (so every run also proves them), and
every table is emptied after each test, so each test starts from a fresh database.

Markers are applied at collection from the fixtures a test uses, directly or through other fixtures
(`MARKER_FIXTURES`), never kept by hand: `engine` (the real container engine), `postgres` (a PostgreSQL
server of its own), `process` (real processes: gunicorn, `flask reconcile`, redis-server, spawned
writers), `load` (the sustained load test), `fuzz` (schemathesis over the spec: minutes of requests),
`clients` (client generators run on the spec: Node.js tools that scripts/ensure_client_tools.sh installs),
`image` (builds and runs the production image; with `engine`, in the SQLite run only).
`make check` runs the tests that carry none of them.

`dbless` is the other way round: a test that uses none of `DATABASE_FIXTURES` never reaches the test
database (it needs no schema, and no tables are emptied after it), so which database the run uses cannot
change what it shows; the PostgreSQL run of scripts/test.sh leaves these out. A `dbless` test that asks
for the database at run time all the same (`request.getfixturevalue`) fails, so the marker cannot hide
a database test from that run.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from deploy_service import create_app
from deploy_service.extensions import db
from deploy_service.reconciler import Reconciler
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import EXTENSION_KEY as SETTINGS_KEY
from deploy_service.settings import Settings, settings_for, settings_from
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, ROOT, Api, ProcessGroup

IMAGES_DIR = ROOT / "tests" / "integration" / "images"
ENSURE_DOCKER = ROOT / "scripts" / "ensure_docker.sh"

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
    "HEALTH_ENGINE_CACHE_SECONDS": 0.0,  # a test that flips the engine sees it at once; the cache's own test sets it
    "ALERT_EVENT_RULE_SECONDS": 0.0,  # every posted evaluation runs the rule; its own test sets the interval
    # The test engine has no `bridge` network (host networking) and one tenant: a test that switches to
    # ENVIRONMENT=production keeps its runner (tests/security/test_host_network.py builds its own without it).
    "HOST_NETWORK_ALLOWED": True,
}


MARKER_FIXTURES: dict[str, frozenset[str]] = {
    "engine": frozenset({"docker_engine", "swarm_manager"}),
    "postgres": frozenset({"postgres_server"}),
    "process": frozenset({"processes"}),
    "load": frozenset({"load_service"}),
    "fuzz": frozenset({"fuzz_app", "fuzz_schema"}),
    "clients": frozenset({"client_tools"}),
    "image": frozenset({"production_image"}),
}
"""Marker → the fixtures that make a test need it (a test using a fixture that depends on one counts too)."""

DATABASE_FIXTURES = frozenset({"database_url", "fuzz_schema"})
"""The fixtures that make a test use the test database: `database_url` (which `make_app`, `app` and all
that build on them depend on), and `fuzz_schema`, because schemathesis' lazy tests ask for the fuzz app
(on the test database) at run time, where collection cannot see it. A test with none of them is `dbless`."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in MARKER_FIXTURES.items():
            if used & fixtures:
                item.add_marker(marker)
        if not used & DATABASE_FIXTURES:
            item.add_marker("dbless")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """A `docker.DockerClient` of the engine under test, after the test images of tests/integration/images
    are built. An engine that does not answer fails the session; DEPLOY_SERVICE_SKIP_ENGINE_TESTS=1 skips."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        message = f"The container engine does not answer ({exc}); start it with {ENSURE_DOCKER}."
        if os.environ.get("DEPLOY_SERVICE_SKIP_ENGINE_TESTS") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    build = subprocess.run([str(IMAGES_DIR / "build.sh")], capture_output=True, text=True, timeout=300, check=False)
    if build.returncode != 0:
        pytest.fail(f"building the test images failed:\n{build.stderr}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def swarm_manager(docker_engine: Any) -> Iterator[None]:
    """The engine as a single-node Swarm manager: initialised here if it is not one, and left afterwards
    only if this session initialised it (scripts/test.sh does the same around the whole run)."""
    state = docker_engine.info().get("Swarm") or {}
    initialised = False
    if state.get("LocalNodeState") != "active":
        docker_engine.swarm.init(advertise_addr="127.0.0.1")
        initialised = True
    elif not state.get("ControlAvailable"):
        pytest.fail("The engine is a Swarm worker, not a manager; the swarm tests need a manager.", pytrace=False)
    yield
    if initialised:
        docker_engine.swarm.leave(force=True)


@pytest.fixture()
def processes() -> Iterator[ProcessGroup]:
    """Start real processes through this; each is ended (by pid) after the test."""
    group = ProcessGroup()
    yield group
    group.stop_all()


def _drop_everything(app: Flask) -> None:
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This run's own database: a new SQLite file, or a new database on `TEST_DATABASE_URL`'s server.

    On PostgreSQL the database is created under a unique name (so runs sharing a server never see each
    other's rows) and dropped when the session ends.
    """
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    server = make_url(url)
    if not server.get_backend_name().startswith("postgresql"):
        yield url
        return
    name = f"deploy_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
def _fresh_database(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that uses the database, empty every table; a `dbless` test must not have used it."""
    if request.node.get_closest_marker("dbless"):
        yield
        if "database_url" in request.fixturenames:
            pytest.fail("a dbless test asked for the test database at run time: add its fixture to DATABASE_FIXTURES")
        return
    app: Flask = request.getfixturevalue("app")
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


@pytest.fixture()
def reconciler(app: Flask, fake_runner: FakeRunner) -> Iterator[Reconciler]:
    """A reconciler on the in-memory runner, with fast settings (a module needing another shape defines its own)."""
    reconciler = Reconciler(app, runner=fake_runner, settings=FAST)
    yield reconciler
    reconciler.close()


@pytest.fixture()
def api(client: FlaskClient, auth: AuthActions) -> Api:
    """A logged-in user's `Api`."""
    _, headers = auth.user()
    return Api(client, headers)
