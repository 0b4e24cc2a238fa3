"""`rawdb`: prepared reads on the pool's DBAPI connection give what SQLAlchemy gives, hold one pooled
connection per request and return it, and fail the way the ORM path fails; on PostgreSQL they have a
pool of their own, in autocommit, and read again once when their connection has died."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, g
from sqlalchemy import bindparam, column, func, select, table, text
from sqlalchemy.exc import DBAPIError

from deploy_service import rawdb
from deploy_service.extensions import db
from deploy_service.models import AuthSession, User
from deploy_service.rawdb import PreparedQuery
from tests.factories import make_admin, make_user

_USERS = (
    select(User.id, User.email, User.full_name, User.is_active, User.created_at, AuthSession.revoked_at)
    .join_from(User, AuthSession, AuthSession.user_id == User.id, isouter=True)
    .where(User.email.like(bindparam("pattern")))
    .order_by(User.email)
)


def _reads_pool(app: Flask) -> Any:
    return app.extensions[rawdb.READS_KEY].pool


def _postgresql_only(app: Flask) -> None:
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("a server with round trips and connections it can end: PostgreSQL only")


def test_rows_are_what_sqlalchemy_returns(app: Flask) -> None:
    make_admin(app, email="a@example.com")
    inactive = make_user(app, email="b@example.com")
    with app.app_context():
        db.session.get(User, inactive.id).is_active = False  # type: ignore[union-attr]
        db.session.add(AuthSession(user_id=inactive.id, expires_at=datetime(2030, 1, 1, tzinfo=UTC)))
        db.session.commit()
        expected = [tuple(row) for row in db.session.execute(_USERS, {"pattern": "%@example.com"})]
    with app.test_request_context():
        rows = PreparedQuery(_USERS).rows({"pattern": "%@example.com"})
    assert rows == expected and len(rows) == 2
    [(_, _, _, active, created, revoked), (_, _, _, inactive_flag, _, _)] = rows
    assert active is True and inactive_flag is False, "booleans, not SQLite's 0 and 1"
    assert isinstance(created, datetime) and created.tzinfo is not None and revoked is None


def test_one_connection_per_request_returned_at_its_end(app: Flask) -> None:
    make_admin(app, email="a@example.com")
    query = PreparedQuery(select(User.email).where(User.email == bindparam("email")))
    with app.test_request_context():
        pool = _reads_pool(app)
        before = pool.checkedout()
        assert query.first({"email": "a@example.com"}) == ("a@example.com",)
        held = g._raw_db
        assert query.first({"email": "nobody@example.com"}) is None
        assert g._raw_db is held and pool.checkedout() == before + 1
    assert pool.checkedout() == before


def test_release_returns_the_connection_at_once_and_is_idempotent(app: Flask) -> None:
    query = PreparedQuery(select(func.count()).select_from(User))
    with app.test_request_context():
        pool = _reads_pool(app)
        before = pool.checkedout()
        assert query.first({}) == (0,)
        rawdb.release()
        rawdb.release()
        assert "_raw_db" not in g and pool.checkedout() == before
        assert query.first({}) == (0,), "a later read checks out a connection again"


def test_a_driver_error_is_sqlalchemys_error_and_gives_the_connection_back(app: Flask) -> None:
    broken = PreparedQuery(select(column("x")).select_from(table("no_such_table")).where(column("x") == bindparam("x")))
    with app.test_request_context():
        pool = _reads_pool(app)
        before = pool.checkedout()
        with pytest.raises(DBAPIError) as raised:
            broken.rows({"x": "a secret value"})
        assert "no_such_table" in str(raised.value) and "a secret value" not in str(raised.value)
        assert "_raw_db" not in g and pool.checkedout() == before


def test_expanding_parameters_are_refused(app: Flask) -> None:
    query = PreparedQuery(select(User.id).where(User.id.in_(bindparam("ids", expanding=True))))
    with app.test_request_context(), pytest.raises(ValueError, match="expanding"):
        query.rows({"ids": ["a"]})


def test_on_postgresql_the_reads_have_their_own_pool_in_autocommit_without_pings(app: Flask) -> None:
    _postgresql_only(app)
    reads = app.extensions[rawdb.READS_KEY]
    with app.app_context():
        assert reads is not db.engine and reads.url == db.engine.url
    assert reads.pool._pre_ping is False  # a round trip per request saved; a dead connection is read again instead
    with app.test_request_context():
        assert PreparedQuery(select(func.count()).select_from(User)).first({}) == (0,)
        status = g._raw_db.dbapi_connection.info.transaction_status
        assert status.name == "IDLE", "no transaction left open: no BEGIN before a read, no rollback after it"


def test_a_read_on_a_connection_the_server_ended_is_read_again_on_a_fresh_one(app: Flask) -> None:
    _postgresql_only(app)
    backend = PreparedQuery(select(func.pg_backend_pid()))
    with app.test_request_context():
        [pid] = backend.first({}) or (None,)
    # The connection went back to the pool; the server ends it (as a restart would) while it sits there.
    with app.app_context(), db.engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with app.test_request_context():
        [again] = backend.first({}) or (None,)
        assert again is not None and again != pid
    with app.test_request_context():  # the fresh pool serves the next read (once in a full run, from another
        [later] = backend.first({}) or (None,)  # of its connections: reuse itself is not what this shows)
        assert later is not None and later != pid


def test_a_connection_lost_again_after_the_retry_is_an_error_and_invalidated(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    _postgresql_only(app)
    backend = PreparedQuery(select(func.pg_backend_pid()))
    reads = app.extensions[rawdb.READS_KEY]
    real_connect = reads.raw_connection

    def dead_connection() -> Any:  # every connection handed out has already been ended by the server
        connection = real_connect()
        with db.engine.connect() as other:
            pid = connection.dbapi_connection.info.backend_pid
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return connection

    monkeypatch.setattr(reads, "raw_connection", dead_connection)
    with app.test_request_context():
        with pytest.raises(DBAPIError) as raised:
            backend.first({})
        assert raised.value.connection_invalidated and "_raw_db" not in g
    monkeypatch.undo()
    with app.test_request_context():
        assert backend.first({}) is not None
