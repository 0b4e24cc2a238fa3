"""Invocation bodies: the record of one call through `interact`, never its bodies."""

from __future__ import annotations

from marshmallow import fields

from deploy_service.models import InvocationStatus
from deploy_service.schemas.common import Choice, PaginationArgs, ResponseSchema, UtcDateTime, page_schema


class InvocationListArgs(PaginationArgs):
    status = Choice(
        InvocationStatus,
        metadata={"description": "`ok`: status below 500; `error`: 500 and above (what the error rate counts)."},
    )
    since = UtcDateTime(metadata={"description": "Calls made at or after this time; ISO 8601 with a zone."})


class InvocationSchema(ResponseSchema):
    """One call: where it went, how it ended, how long and how large; never the request's or answer's body."""

    id = fields.Integer()
    deployment_id = fields.String()
    replica = fields.Integer(allow_none=True, metadata={"description": "The replica that took the call."})
    session_id = fields.String(allow_none=True, metadata={"description": "The call's `X-Session-Id`."})
    status_code = fields.Integer(
        metadata={"description": "The agent's status, or the service's (502, 504) when it got no answer."}
    )
    error = fields.String(
        allow_none=True, metadata={"description": "`kind: message` of the service's error, when the call got one."}
    )
    streamed = fields.Boolean(metadata={"description": "Asked with `Accept: text/event-stream`."})
    latency_ms = fields.Float(metadata={"description": "To the answer's last byte (a stream: to its end)."})
    first_byte_ms = fields.Float(
        allow_none=True,
        metadata={"description": "To the agent's first byte: its answer's head (JSON), its first chunk (a stream)."},
    )
    request_bytes = fields.Integer(allow_none=True)
    response_bytes = fields.Integer(allow_none=True, metadata={"description": "Bytes of the agent's answer passed on."})
    created_at = fields.DateTime()


InvocationPageSchema = page_schema(InvocationSchema, "InvocationPage")
