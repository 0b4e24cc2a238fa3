"""Columns read as a response body shows them, for the prepared-read paths (`deployment_reads`,
`agent_reads`): timestamps as ISO 8601, JSON handed on as the text the database holds, and a row's body
built by a dict display compiled once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import DateTime, Float, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator


class IsoTimestamp(TypeDecorator[Any]):
    """A UTC timestamp as the body shows it: SQLite builds the ISO 8601 text (`IsoText`), PostgreSQL's
    driver hands back a `datetime`, which orjson writes as ISO 8601 once it is in UTC."""

    impl = DateTime
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name == "sqlite":
            return None

        def in_utc(value: datetime | None) -> datetime | None:
            if value is None:
                return None
            return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)

        return in_utc


class IsoText(FunctionElement[Any]):
    """A timestamp column read as `IsoTimestamp`.

    SQLite keeps these columns as `YYYY-MM-DD HH:MM:SS.ffffff` UTC text; it turns that into
    `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` itself, exactly `datetime.isoformat()` (which leaves out zero
    microseconds), so no Python runs per value: a page of 50 has 300 of them.
    """

    type = IsoTimestamp()
    inherit_cache = True


@compiles(IsoText)
def _iso_text_default(element: IsoText, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(IsoText, "sqlite")
def _iso_text_sqlite(element: IsoText, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return (
        f"(CASE WHEN substr({value}, 20) = '.000000' THEN replace(substr({value}, 1, 19), ' ', 'T') "
        f"ELSE replace({value}, ' ', 'T') END || '+00:00')"
    )


class RawJSON(TypeDecorator[Any]):
    """JSON text handed on as an `orjson.Fragment`: embedded in the response without being parsed."""

    impl = Text
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        def wrap(value: Any) -> Any:
            return None if value is None else orjson.Fragment(value)

        return wrap


class JsonText(FunctionElement[Any]):
    """A JSON value read as `RawJSON`: SQLite keeps it as text already, PostgreSQL's JSONB is cast to text."""

    type = RawJSON()
    inherit_cache = True


class ParsedJSON(TypeDecorator[Any]):
    """JSON text parsed by orjson (a tenth of the stdlib's `json.loads`, which the JSON type's processor
    calls on SQLite and psycopg calls for JSONB)."""

    impl = Text
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        loads = orjson.loads

        def parse(value: Any) -> Any:
            return None if value is None else loads(value)

        return parse


class JsonValue(FunctionElement[Any]):
    """A JSON value read as `ParsedJSON`, for a body that shows it reshaped (as text, like `JsonText`)."""

    type = ParsedJSON()
    inherit_cache = True


@compiles(JsonText)
@compiles(JsonValue)
def _json_text_default(element: JsonText | JsonValue, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(JsonText, "postgresql")
@compiles(JsonValue, "postgresql")
def _json_text_postgresql(element: JsonText | JsonValue, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS TEXT)"


def timestamp(column: Any) -> Any:
    return IsoText(column).label(column.name)


def body_of(fields: Sequence[tuple[str, Any]]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """`row -> {key: row[position], ...}` for the declared fields, as one dict display compiled once.

    What `namedtuple` and `dataclasses` do for their methods: a page of 50 builds 200 of these dicts, and
    the display costs a third of `dict(zip(keys, row))` (which makes a tuple per pair). The keys are this
    module's constants.
    """
    items = ", ".join(f"{key!r}: row[{position}]" for position, (key, _) in enumerate(fields))
    built: Callable[[Sequence[Any]], dict[str, Any]] = eval(f"lambda row: {{{items}}}")
    return built


class DriverNumber(TypeDecorator[Any]):
    """A number as the driver hands it back, unprocessed: the body converts it (SQLAlchemy's PostgreSQL
    numeric processor is chosen by the result's column type, which a prepared read does not know ahead)."""

    impl = Float
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        return None
