"""`rawdb`: prepared reads on the pool's DBAPI connection give what SQLAlchemy gives, hold one pooled
connection per request and return it, and fail the way the ORM path fails."""

from __future__ import annotations

from datetime import UTC, datetime

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
        pool = db.engine.pool
        before = pool.checkedout()  # type: ignore[attr-defined]
        assert query.first({"email": "a@example.com"}) == ("a@example.com",)
        held = g._raw_db
        assert query.first({"email": "nobody@example.com"}) is None
        assert g._raw_db is held and pool.checkedout() == before + 1  # type: ignore[attr-defined]
    assert pool.checkedout() == before  # type: ignore[attr-defined]


def test_release_returns_the_connection_at_once_and_is_idempotent(app: Flask) -> None:
    query = PreparedQuery(select(func.count()).select_from(User))
    with app.test_request_context():
        pool = db.engine.pool
        before = pool.checkedout()  # type: ignore[attr-defined]
        assert query.first({}) == (0,)
        rawdb.release()
        rawdb.release()
        assert "_raw_db" not in g and pool.checkedout() == before  # type: ignore[attr-defined]
        assert query.first({}) == (0,), "a later read checks out a connection again"


def test_a_driver_error_is_sqlalchemys_error_and_gives_the_connection_back(app: Flask) -> None:
    broken = PreparedQuery(select(column("x")).select_from(table("no_such_table")).where(column("x") == bindparam("x")))
    with app.test_request_context():
        pool = db.engine.pool
        before = pool.checkedout()  # type: ignore[attr-defined]
        with pytest.raises(DBAPIError) as raised:
            broken.rows({"x": "a secret value"})
        assert "no_such_table" in str(raised.value) and "a secret value" not in str(raised.value)
        assert "_raw_db" not in g and pool.checkedout() == before  # type: ignore[attr-defined]


def test_expanding_parameters_are_refused(app: Flask) -> None:
    query = PreparedQuery(select(User.id).where(User.id.in_(bindparam("ids", expanding=True))))
    with app.test_request_context(), pytest.raises(ValueError, match="expanding"):
        query.rows({"ids": ["a"]})


def test_a_lost_connection_is_invalidated_and_the_next_request_reads(app: Flask) -> None:
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("a server that ends a connection: PostgreSQL only")
    backend = PreparedQuery(select(func.pg_backend_pid()))
    with app.test_request_context():
        [pid] = backend.first({}) or (None,)
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            backend.first({})
        assert raised.value.connection_invalidated
    with app.test_request_context():
        [again] = backend.first({}) or (None,)
        assert again != pid
