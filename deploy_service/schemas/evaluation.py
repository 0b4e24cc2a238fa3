"""Evaluation bodies: what an agent reports, how lists are filtered, and the stats."""

from __future__ import annotations

from marshmallow import fields, validate

from deploy_service.models import DeploymentStatus
from deploy_service.schemas.common import (
    Choice,
    JsonBodySchema,
    PaginationArgs,
    ResponseSchema,
    StrictSchema,
    UtcDateTime,
    page_schema,
)

_SCORE = validate.Range(min=0.0, max=1.0)


class EvaluationCreateSchema(JsonBodySchema):
    """One response of an agent, with the scores an evaluator gave it."""

    agent_id = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "Required with a JWT; with an agent's key it defaults to (and must be) that agent."},
    )
    prompt = fields.String(required=True, validate=validate.Length(max=100_000))
    response = fields.String(required=True, validate=validate.Length(max=100_000))
    semantic_drift = fields.Float(allow_none=True, validate=_SCORE)
    uncertainty = fields.Float(allow_none=True, validate=_SCORE)
    factual_support = fields.Float(allow_none=True, validate=_SCORE)
    hallucination_probability = fields.Float(allow_none=True, validate=_SCORE)
    hallucinated = fields.Boolean(
        metadata={"description": "Default: hallucination_probability ≥ 0.5 when given, else false."}
    )
    latency_sec = fields.Float(allow_none=True, validate=validate.Range(min=0.0))
    throughput_qps = fields.Float(allow_none=True, validate=validate.Range(min=0.0))
    mode = fields.String(allow_none=True, validate=validate.Length(max=50))
    model_name = fields.String(allow_none=True, validate=validate.Length(max=200))
    agent_name = fields.String(allow_none=True, validate=validate.Length(max=200))


class EvaluationSchema(ResponseSchema):
    """A stored evaluation; `deployment_id` is the agent's live deployment when it was reported, if any."""

    id = fields.String()
    agent_id = fields.String()
    deployment_id = fields.String(allow_none=True)
    prompt = fields.String()
    response = fields.String()
    semantic_drift = fields.Float(allow_none=True)
    uncertainty = fields.Float(allow_none=True)
    factual_support = fields.Float(allow_none=True)
    hallucination_probability = fields.Float(allow_none=True)
    hallucinated = fields.Boolean()
    latency_sec = fields.Float(allow_none=True)
    throughput_qps = fields.Float(allow_none=True)
    mode = fields.String(allow_none=True)
    model_name = fields.String(allow_none=True)
    agent_name = fields.String(allow_none=True)
    created_at = fields.DateTime()


class EvaluationListArgs(PaginationArgs):
    agent_id = fields.String()
    hallucinated = fields.Boolean()
    since = UtcDateTime(metadata={"description": "ISO 8601 with a zone."})


class EvaluationStatsArgs(StrictSchema):
    days = fields.Integer(load_default=7, validate=validate.Range(min=1, max=3650))
    agent_id = fields.String()


class EvaluationStatsSchema(ResponseSchema):
    """Totals and averages of evaluations over a window; an average is null when no evaluation had the value."""

    total_evaluations = fields.Integer()
    total_hallucinations = fields.Integer()
    hallucination_rate = fields.Float(metadata={"description": "A fraction in [0, 1]; 0 without evaluations."})
    avg_latency = fields.Float(allow_none=True, metadata={"description": "Seconds."})
    avg_throughput = fields.Float(allow_none=True, metadata={"description": "Queries per second."})
    avg_semantic_drift = fields.Float(allow_none=True)
    avg_uncertainty = fields.Float(allow_none=True)
    avg_factual_support = fields.Float(allow_none=True)


class InvocationStatsSchema(ResponseSchema):
    """Calls through `interact` over a window: how many, how many failed (5xx), latency percentiles."""

    count = fields.Integer()
    errors = fields.Integer()
    p50_ms = fields.Float(allow_none=True, metadata={"description": "Null without calls."})
    p95_ms = fields.Float(allow_none=True, metadata={"description": "Null without calls."})


class AgentStatsSchema(ResponseSchema):
    """An agent's figures over the last `window_hours` hours."""

    agent_id = fields.String()
    window_hours = fields.Integer()
    deployment_id = fields.String(allow_none=True, metadata={"description": "The live deployment; null without."})
    deployment_status = Choice(DeploymentStatus, allow_none=True)
    uptime_seconds = fields.Float(metadata={"description": "Since the live deployment started serving; else 0."})
    restarts = fields.Integer(metadata={"description": "Container restarts of the live deployment's replicas."})
    invocations = fields.Nested(InvocationStatsSchema)
    evaluations = fields.Nested(EvaluationStatsSchema)


EvaluationPageSchema = page_schema(EvaluationSchema, "EvaluationPage")
