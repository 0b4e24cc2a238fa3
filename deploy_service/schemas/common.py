"""Schemas shared by every resource: the error body, pagination arguments and list bodies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate

DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 200
MAX_SKIP = 2**31 - 1  # the spec's bound; a larger offset is a 400 (PostgreSQL's OFFSET is a bigint)


# Text PostgreSQL can store: no NUL character, in a column or in JSONB. The spec says so for request
# strings (`api.no_nul_in_requests`), and every request schema checks it (`StrictSchema._storable_text`).
NO_NUL_PATTERN = "^[^\\u0000]*$"
# A JSON `"\ud800"` escape decodes to a lone surrogate, which no database driver can encode (UTF-8).
_SURROGATE = re.compile("[\ud800-\udfff]")
NUL_MESSAGE = "Must not contain NUL characters."
SURROGATE_MESSAGE = "Must be valid Unicode (a lone surrogate such as \\ud800 is not)."


def _unstorable(value: Any) -> str | None:
    """Why `value` (or a key or item inside it) cannot be stored as text, or None when it can."""
    if isinstance(value, str):
        if "\x00" in value:
            return NUL_MESSAGE
        return SURROGATE_MESSAGE if _SURROGATE.search(value) else None
    if isinstance(value, Mapping):
        items: Any = (part for pair in value.items() for part in pair)
    elif isinstance(value, list | tuple):
        items = value
    else:
        return None
    return next((reason for reason in map(_unstorable, items) if reason), None)


class StrictSchema(Schema):
    """Base of request schemas (bodies and query arguments).

    Unknown fields are rejected (the marshmallow default, made explicit), and so is text a database
    cannot store: a NUL character (PostgreSQL refuses it) or a lone surrogate (no driver encodes it),
    at any depth, as a 400 naming the field rather than a 500 from the database.
    """

    class Meta:
        unknown = "raise"

    @pre_load
    def _storable_text(self, data: Any, **_: Any) -> Any:
        if isinstance(data, Mapping):
            bad = {str(key): [reason] for key, value in data.items() if (reason := _unstorable(value))}
            if bad:
                raise ValidationError(bad)
        return data


# JSON types each scalar field takes in a body; marshmallow alone would also take "5" or "true".
_JSON_TYPES: tuple[tuple[type[fields.Field], tuple[type, ...], str], ...] = (
    (fields.Boolean, (bool,), "boolean"),
    (fields.Integer, (int,), "integer"),
    (fields.Float, (int, float), "number"),
)


class JsonBodySchema(StrictSchema):
    """Base of JSON request bodies: unknown fields and values of the wrong JSON type are rejected.

    The OpenAPI spec says `integer`, `number` or `boolean`; a string, or a fraction for an integer, is a
    400. As in JSON Schema (OpenAPI 3.1), an integer is a number without a fractional part: `3.0` is 3.
    """

    @pre_load
    def _json_types(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        errors: dict[str, list[str]] = {}
        integral: dict[str, int] = {}
        for field in self.load_fields.values():
            key = field.data_key or field.name or ""
            value = data.get(key)
            if key not in data or value is None:
                continue
            for field_type, json_types, kind in _JSON_TYPES:
                if isinstance(field, field_type):
                    if kind == "integer" and isinstance(value, float) and value.is_integer():
                        integral[key] = int(value)
                    elif not isinstance(value, json_types) or (isinstance(value, bool) and kind != "boolean"):
                        errors[key] = [f"Not a valid {kind}."]
                    break
        if errors:
            raise ValidationError(errors)
        return {**data, **integral} if integral else data


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 time with a zone, loaded as UTC; one that is out of range in UTC is a 400.

    `9999-12-31T23:59:59-23:59` parses, but is past the year 9999 in UTC, where every comparison
    with a stored time converts it (an OverflowError, a 500, without this).
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise ValidationError("Out of range: the time must fall within years 1-9999 in UTC.") from exc


class ResponseSchema(Schema):
    """Base of response bodies: every field is always in the body, so the spec marks each one `required`.

    Client generators type a field that is not required as possibly missing (`field?: T`, `Unset`), which
    a frontend must then check on every read. A field that a body may really leave out says so with
    `metadata={"optional": True}`. `required` only documents here: these schemas are never loaded.
    """

    def on_bind_field(self, field_name: str, field_obj: fields.Field[Any]) -> None:
        if not field_obj.metadata.get("optional"):
            field_obj.required = True


class Choice(fields.String):
    """A string that is one value of a `StrEnum`; the spec names the set after the enum class.

    Every field taking the same set refers to the one component schema (`DeploymentStatus`, ...), so
    client generators make one enum type of it, where inline `enum` lists made one per property and
    clashed when two sets shared a name. On load it refuses any other value.
    """

    def __init__(self, enum: type[StrEnum], **kwargs: Any) -> None:
        validators = kwargs.pop("validate", None)
        chain = [validate.OneOf([member.value for member in enum])]
        if validators is not None:
            chain.extend(validators if isinstance(validators, list | tuple) else [validators])
        super().__init__(validate=chain, **kwargs)
        self.enum = enum


class Computed(fields.Method):
    """A value a schema method computes, documented as a named schema (or a list of it).

    `fields.Method` documents no type at all; this one says what the method returns, so generated
    clients get `ReplicaCounts` rather than an object that may have no keys.
    """

    def __init__(self, serialize: str, *, schema: type[Schema], many: bool = False, **kwargs: Any) -> None:
        super().__init__(serialize, **kwargs)
        self.documented_schema = schema
        self.documented_many = many


class OneOf(fields.Raw):
    """A value that is one of several named schemas, dumped as it is stored (a delivery's payload data is
    kept as the JSON it was sent as); documented as `anyOf` their references."""

    def __init__(self, *schemas: type[Schema], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.documented_schemas = schemas


def document_named_fields(converter: Any, field: fields.Field[Any], ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """apispec attribute function: a `Choice` refers to its enum's schema, a `Computed` to its schema, a
    `OneOf` to any of its schemas.

    Runs after apispec's own functions, so it replaces what they inferred from the field's class (a
    plain string with an inline `enum`, an untyped value) and handles `allow_none` itself.
    """
    if isinstance(field, Choice):
        name = field.enum.__name__
        if name not in converter.spec.components.schemas:
            converter.spec.components.schema(
                name,
                {
                    "type": "string",
                    "enum": [member.value for member in field.enum],
                    "description": (field.enum.__doc__ or name).strip().splitlines()[0],
                },
            )
        target: dict[str, Any] = {"$ref": f"#/components/schemas/{name}"}
    elif isinstance(field, Computed):
        target = converter.resolve_nested_schema(field.documented_schema)
        if field.documented_many:
            target = {"type": "array", "items": target}
    elif isinstance(field, OneOf):
        target = {"anyOf": [converter.resolve_nested_schema(schema) for schema in field.documented_schemas]}
    else:
        return {}
    for key in ("type", "enum", "format"):
        ret.pop(key, None)
    if field.allow_none:
        return {"anyOf": [target, {"type": "null"}]}
    return target


class ErrorSchema(ResponseSchema):
    """The contract's error body, returned with every 4xx/5xx status."""

    success = fields.Boolean(metadata={"example": False, "description": "Always false."})
    error = fields.String(
        metadata={
            "description": "The snake_case kind, e.g. `validation_error`, `not_found`, `conflict`, `invalid_state`.",
            "example": "validation_error",
        }
    )
    message = fields.String(metadata={"description": "A human sentence.", "example": "Invalid input: replicas."})
    details = fields.Dict(
        keys=fields.String(),
        metadata={"optional": True, "description": "For validation errors, each bad field and what is wrong with it."},
    )


class PaginationArgs(StrictSchema):
    """`skip`/`limit` query arguments. A limit above the maximum is clamped, not refused.

    Query arguments are strict like bodies: an unknown one is a 400, not silently ignored.
    """

    PURE_QUERY: ClassVar[bool] = True
    """Loading depends on the query string alone (no clock, setting or caller), so the parser keeps what a query
    string loads to (`api.common.Parser.parse`). A subclass whose loading depends on anything else sets False."""

    skip = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_SKIP))
    limit = fields.Integer(
        load_default=DEFAULT_PAGE_LIMIT,
        validate=validate.Range(min=1),
        metadata={
            "description": f"Page size, default {DEFAULT_PAGE_LIMIT}; values above {MAX_PAGE_LIMIT} are clamped."
        },
    )

    @post_load
    def clamp(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["limit"] = min(data["limit"], MAX_PAGE_LIMIT)
        return data


class WindowArgs(StrictSchema):
    """`hours`: the window of time-based figures (default the last 24 hours)."""

    hours = fields.Integer(load_default=24, validate=validate.Range(min=1, max=24 * 365))


def page_schema(item_schema: type[Schema], name: str) -> type[Schema]:
    """A list body `{items, total, skip, limit}` whose items are `item_schema`."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "total": fields.Integer(required=True),
            "skip": fields.Integer(required=True),
            "limit": fields.Integer(required=True),
        },
        name=name,
    )
