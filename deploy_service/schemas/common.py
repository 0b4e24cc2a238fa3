"""Schemas shared by every resource: the error body, pagination arguments and list bodies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate

DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 200


class StrictSchema(Schema):
    """Base of request schemas: unknown fields are rejected (the marshmallow default, made explicit)."""

    class Meta:
        unknown = "raise"


# JSON types each scalar field takes in a body; marshmallow alone would also take "5", 5.0 or "true".
_JSON_TYPES: tuple[tuple[type[fields.Field], tuple[type, ...], str], ...] = (
    (fields.Boolean, (bool,), "boolean"),
    (fields.Integer, (int,), "integer"),
    (fields.Float, (int, float), "number"),
)


class JsonBodySchema(StrictSchema):
    """Base of JSON request bodies: unknown fields and values of the wrong JSON type are rejected.

    The OpenAPI spec says `integer`, `number` or `boolean`; a string, or a float for an integer, is a 400.
    """

    @pre_load
    def _json_types(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        errors: dict[str, list[str]] = {}
        for field in self.load_fields.values():
            key = field.data_key or field.name or ""
            value = data.get(key)
            if key not in data or value is None:
                continue
            for field_type, json_types, kind in _JSON_TYPES:
                if isinstance(field, field_type):
                    if not isinstance(value, json_types) or (isinstance(value, bool) and kind != "boolean"):
                        errors[key] = [f"Not a valid {kind}."]
                    break
        if errors:
            raise ValidationError(errors)
        return data


class ErrorSchema(Schema):
    """The contract's error body, returned with every 4xx/5xx status."""

    success = fields.Boolean(required=True, metadata={"example": False})
    error = fields.String(required=True, metadata={"description": "snake_case kind, e.g. validation_error"})
    message = fields.String(required=True, metadata={"description": "A human sentence."})
    details = fields.Dict(metadata={"description": "Optional; for validation errors, each bad field."})


class PaginationArgs(Schema):
    """`skip`/`limit` query arguments. A limit above the maximum is clamped, not refused."""

    class Meta:
        unknown = EXCLUDE

    skip = fields.Integer(load_default=0, validate=validate.Range(min=0))
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


class WindowArgs(Schema):
    """`hours`: the window of time-based figures (default the last 24 hours)."""

    class Meta:
        unknown = EXCLUDE

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
