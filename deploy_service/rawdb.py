"""Prepared reads on the pool's DBAPI connection: the hot read path without the ORM session.

Every authenticated request checks its login session, and dashboards poll the deployment reads. Through
the ORM session each of those paid for the session's transaction bookkeeping (about 45 µs) and for
SQLAlchemy's statement execution (about 50 µs) around a query the database answers in 10 µs. Here a
`PreparedQuery` is a Core `select` compiled once per dialect (the same SQL SQLAlchemy would send), run on
the DBAPI cursor of one pooled connection per request, its rows passed through the same result
processors SQLAlchemy would apply (booleans on SQLite, the columns' own type decorators). Measured in
bench/api.py: see docs/performance.md.

- One connection per request, checked out on first use and returned at the end of the app context, so
  nothing is held across requests. Writes never come here: they go through the ORM session.
- On PostgreSQL the reads have a pool of their own (`READS_KEY`), in autocommit: each read is one round
  trip, with no `BEGIN` before it, no rollback when the connection goes back and no pre-ping at checkout.
  Through the ORM's pool those were three more round trips than the query itself (measured under
  gunicorn: see docs/performance.md), and the raw reads and the ORM session of each
  request thread shared one pool, whose connections past `DB_POOL_SIZE` were opened and closed every
  request. A read is idempotent, so instead of pinging first it is tried again once, on a fresh
  connection, when its connection turns out to be dead (a PostgreSQL restart): the dead one is
  invalidated and the pool's idle ones, which died with it, are dropped. On SQLite (a file, no round
  trips) the reads use the ORM's engine, whose pool has no pre-ping.
- A driver error is raised as SQLAlchemy's `DBAPIError` (the same class the ORM path raises, so the same
  handler answers and logs it, without its parameters); a lost connection is invalidated, so the pool
  never hands it out again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, Select, create_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from deploy_service.extensions import db

_Processor = Callable[[Any], Any] | None

READS_KEY = "deploy_service.reads_engine"
"""`app.extensions[READS_KEY]`: the engine the reads run on (PostgreSQL: a pool of their own)."""


_Converter = Callable[[Sequence[Any]], tuple[Any, ...]] | None


def _converter(processors: Sequence[_Processor]) -> _Converter:
    """A row's conversion that calls only the columns' processors there are (most columns have none)."""
    active = tuple((position, step) for position, step in enumerate(processors) if step is not None)
    if not active:
        return None

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        values = list(row)
        for position, step in active:
            values[position] = step(values[position])
        return tuple(values)

    return convert


class PreparedQuery:
    """A Core `select` run as prepared SQL on the request's DBAPI connection."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._prepared: dict[str, tuple[str, tuple[str, ...] | None, _Converter]] = {}

    def _prepare(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, _Converter]:
        prepared = self._prepared.get(dialect.name)
        if prepared is None:
            compiled = self.statement.compile(dialect=dialect)
            sql = compiled.string
            if "POSTCOMPILE" in sql:
                raise ValueError("a PreparedQuery cannot take expanding or literal-execute parameters")
            order = tuple(compiled.positiontup or ()) if dialect.positional else None
            processors = [
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self.statement.selected_columns
            ]
            prepared = self._prepared[dialect.name] = (sql, order, _converter(processors))
        return prepared

    def rows(self, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row, as tuples of processed values in the statement's column order."""
        engine: Engine = current_app.extensions[READS_KEY]
        dialect = engine.dialect
        sql, order, convert = self._prepare(dialect)
        bound: Any = tuple(params[name] for name in order) if order is not None else dict(params)
        raw = _execute(engine, sql, bound)
        if convert is None:
            return raw
        return [convert(row) for row in raw]

    def first(self, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, or None."""
        found = self.rows(params)
        return found[0] if found else None


def _execute(engine: Engine, sql: str, params: Any, *, retry: bool = True) -> list[Any]:
    dialect = engine.dialect
    connection = g.get("_raw_db")
    if connection is None:
        connection = g._raw_db = engine.raw_connection()
    cursor = None
    try:
        cursor = connection.cursor()
        cursor.execute(sql, params)
        rows: list[Any] = cursor.fetchall()
        cursor.close()
        return rows
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, connection.dbapi_connection, cursor)
        if lost:
            connection.invalidate(exc)
        release()
        if lost and retry and engine is not db.engine:
            engine.dispose()  # the idle connections died with this one: connect afresh
            return _execute(engine, sql, params, retry=False)
        raise DBAPIError.instance(
            sql,
            params,
            exc,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=dialect,
        ) from exc


def release(_error: BaseException | None = None) -> None:
    """Return the request's connection to the pool (which resets it); a no-op when none was taken."""
    connection = g.pop("_raw_db", None)
    if connection is not None:
        connection.close()


def init_app(app: Flask) -> None:
    """Choose the engine of the reads (after `db.init_app`), and return each app context's connection at
    its end."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "sqlite":
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options.update(isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_reset_on_return=None)
        engine = create_engine(engine.url, **options)
    app.extensions[READS_KEY] = engine
    app.teardown_appcontext(release)
