"""The Alembic migrations build exactly the schema the models describe, and unwind cleanly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from deploy_service.extensions import db
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from tests.fakes import FakeRunner


@pytest.fixture()
def empty_database_url(database_url: str, tmp_path: Any) -> Iterator[str]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL database on the test server."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_upgrade_matches_models_and_downgrade_unwinds(make_app: Any, empty_database_url: str) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url)
    app.extensions[RUNNER_KEY] = FakeRunner()  # readiness asks the engine: the in-memory one answers
    with app.app_context():
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        assert {"users", "auth_sessions", "agents", "secrets", "alembic_version"} <= tables
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, db.metadata) == []
    ready = app.test_client().get("/health/ready")
    assert ready.status_code == 200, ready.get_json()
    with app.app_context():
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        db.engine.dispose()


def test_a_database_with_users_names_its_oldest_as_the_first_account(make_app: Any, empty_database_url: str) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url)
    with app.app_context():
        upgrade(revision="c2217214ab86")  # before the first_account table
        with db.engine.begin() as connection:
            for number, created in ((1, "2024-01-02 00:00:00"), (2, "2024-01-01 00:00:00")):
                connection.execute(
                    text(
                        "INSERT INTO users (id, email, password_hash, role, is_active, created_at, updated_at) "
                        "VALUES (:id, :email, 'x', 'user', true, :created, :created)"
                    ),
                    {"id": f"user-{number}", "email": f"u{number}@example.com", "created": created},
                )
        upgrade()
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT slot, user_id FROM first_account")).all() == [(1, "user-2")]
        db.engine.dispose()
    later = app.test_client().post("/v1/auth/register", json={"email": "later@example.com", "password": "pw-12345678"})
    assert later.status_code == 201 and later.get_json()["role"] == "developer"


def test_every_existing_deployment_gets_release_1_as_its_status_says(make_app: Any, empty_database_url: str) -> None:
    """Release 1 of each deployment from its row: live ones active, a deploy pending, a stop or delete before
    it ever started failed, a failed one failed with its error; every revision becomes 1."""
    from datetime import UTC, datetime

    from deploy_service.models import Deployment, User
    from deploy_service.services import agents as agent_service
    from tests.factories import agent_payload

    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url)
    with app.app_context():
        upgrade()
    registered = app.test_client().post("/v1/auth/register", json={"email": "o@example.com", "password": "pw-12345678"})
    assert registered.status_code == 201
    started = datetime(2024, 1, 1, tzinfo=UTC)
    rows = {  # status → (started_at, error)
        "ready": (started, None),
        "running": (started, None),
        "deploying": (None, None),
        "stopped": (started, None),
        "failed": (None, "Image gone."),
        "killed": (None, None),
    }
    with app.app_context():
        owner = db.session.get(User, registered.get_json()["id"])
        ids = {}
        for status, (started_at, error) in rows.items():
            agent = agent_service.create_agent(owner, agent_payload())
            deployment = Deployment(
                agent_id=agent.id,
                owner_id=owner.id,
                status=status,
                revision=7,
                image="deploy-test/http-agent:latest",
                config={"image": "deploy-test/http-agent:latest", "source": None, "env": {"MODE": status}},
                started_at=started_at,
                ready_at=started_at if status == "ready" else None,
                error=error,
                ended_at=started if status == "killed" else None,
            )
            db.session.add(deployment)
            db.session.flush()
            ids[status] = deployment.id
        db.session.commit()
        downgrade(revision="5d3c1a9e7f20")  # just before releases
        upgrade()
        with db.engine.connect() as connection:
            found = {
                row.deployment_id: row
                for row in connection.execute(
                    text(
                        "SELECT deployment_id, number, status, reason, image, error, activated_at "
                        "FROM deployment_releases"
                    )
                )
            }
            revisions = set(connection.execute(text("SELECT revision FROM deployments")).scalars())
        db.engine.dispose()
    assert revisions == {1}
    statuses = {status: found[ids[status]].status for status in rows}
    assert statuses == {
        "ready": "active",
        "running": "active",
        "deploying": "pending",
        "stopped": "active",
        "failed": "failed",
        "killed": "failed",
    }
    assert {row.number for row in found.values()} == {1} and {row.reason for row in found.values()} == {"deploy"}
    assert found[ids["failed"]].error == "Image gone."
    assert "deleted before" in found[ids["killed"]].error
    assert found[ids["ready"]].activated_at is not None and found[ids["deploying"]].activated_at is None


def test_each_existing_deployment_remembers_the_highest_generation_its_rows_name(
    make_app: Any, empty_database_url: str
) -> None:
    """`latest_generation` from the deployment's own generation, its slots' and its removed replicas' logs: a
    deployment rolled back to generation 2 after a failed 4 restarts at 5."""
    from deploy_service.models import Deployment, Instance, ReplicaLog, User
    from deploy_service.services import agents as agent_service
    from tests.factories import agent_payload

    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url)
    with app.app_context():
        upgrade()
    registered = app.test_client().post("/v1/auth/register", json={"email": "o@example.com", "password": "pw-12345678"})
    assert registered.status_code == 201
    with app.app_context():
        owner = db.session.get(User, registered.get_json()["id"])
        ids = {}
        for name, generation, slot, kept in (("plain", 3, 3, None), ("slot", 2, 3, None), ("logs", 2, 2, 4)):
            agent = agent_service.create_agent(owner, agent_payload())
            deployment = Deployment(
                agent_id=agent.id,
                owner_id=owner.id,
                status="ready",
                generation=generation,
                image="deploy-test/http-agent:latest",
                config={"image": "deploy-test/http-agent:latest", "source": None},
                instances=[Instance(index=0, generation=slot)],
            )
            db.session.add(deployment)
            db.session.flush()
            if kept is not None:
                db.session.add(ReplicaLog(deployment_id=deployment.id, replica=0, container_id="c1", generation=kept))
            ids[name] = deployment.id
        db.session.commit()
        downgrade(revision="f3f4346ce3d3")  # just before latest_generation
        upgrade()
        with db.engine.connect() as connection:
            found = {
                row[0]: row[1] for row in connection.execute(text("SELECT id, latest_generation FROM deployments"))
            }
        db.engine.dispose()
    assert {name: found[ids[name]] for name in ids} == {"plain": 3, "slot": 3, "logs": 4}


def test_each_existing_webhook_keeps_getting_its_alerts_and_nothing_else(
    make_app: Any, empty_database_url: str
) -> None:
    """A webhook registered before `events` existed subscribes to `alert.raised` and `alert.resolved`, the
    alerts it got, and to none of the release and deployment events."""
    from deploy_service.models import User, Webhook
    from deploy_service.services import webhooks as webhook_service

    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url, WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
    with app.app_context():
        upgrade()
    registered = app.test_client().post("/v1/auth/register", json={"email": "o@example.com", "password": "pw-12345678"})
    assert registered.status_code == 201
    with app.app_context():
        owner = db.session.get(User, registered.get_json()["id"])
        hook, _ = webhook_service.create_webhook(
            owner, url="http://127.0.0.1:9/hook", severities=["critical"], kinds=None, events=["release.failed"]
        )
        hook_id = hook.id
        db.session.remove()  # reading `hook.id` began a transaction: its lock would hold the ALTER TABLE back
        downgrade(revision="9c41d7e2b5a8")  # just before webhooks.events
        assert "events" not in {column["name"] for column in inspect(db.engine).get_columns("webhooks")}
        upgrade()
        db.session.expire_all()
        found = db.session.get(Webhook, hook_id)
        assert found is not None
        assert (found.events, found.severities, found.kinds) == (["alert.raised", "alert.resolved"], ["critical"], [])
        db.session.remove()
        db.engine.dispose()


def test_existing_user_accounts_become_developers_and_secrets_get_version_1(
    make_app: Any, empty_database_url: str
) -> None:
    """`user` was the role that manages its own resources; it is `developer` now (`user` is read-only)."""
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_url)
    with app.app_context():
        upgrade(revision="5e0a7b3c91d4")
        with db.engine.begin() as connection:
            for number, role in ((1, "admin"), (2, "user"), (3, "user")):
                connection.execute(
                    text(
                        "INSERT INTO users (id, email, password_hash, role, is_active, created_at, updated_at) "
                        "VALUES (:id, :email, 'x', :role, true, '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
                    ),
                    {"id": f"user-{number}", "email": f"u{number}@example.com", "role": role},
                )
            connection.execute(
                text(
                    "INSERT INTO secrets (id, owner_id, name, ciphertext, created_at, updated_at) "
                    "VALUES ('secret-1', 'user-2', 'token', :value, '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
                ),
                {"value": b"x"},
            )
        upgrade()
        with db.engine.connect() as connection:
            roles = connection.execute(text("SELECT id, role FROM users ORDER BY id")).all()
            assert roles == [("user-1", "admin"), ("user-2", "developer"), ("user-3", "developer")]
            assert connection.execute(text("SELECT version FROM secrets")).scalar_one() == 1
        downgrade(revision="5e0a7b3c91d4")
        with db.engine.connect() as connection:
            assert {role for (role,) in connection.execute(text("SELECT role FROM users"))} == {"admin", "user"}
        upgrade()
        db.engine.dispose()
