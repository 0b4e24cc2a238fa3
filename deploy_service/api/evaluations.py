"""Evaluation routes: agents report (with their key's `telemetry` scope), owners list and aggregate."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_caller, json_response
from deploy_service.models import Evaluation
from deploy_service.schemas.evaluation import (
    EvaluationCreateSchema,
    EvaluationListArgs,
    EvaluationPageSchema,
    EvaluationSchema,
    EvaluationStatsArgs,
    EvaluationStatsSchema,
)
from deploy_service.services import evaluations as service
from deploy_service.services.common import Page

blp = Blueprint("evaluations", __name__, url_prefix="/v1/evaluations", description="Agent telemetry.")


EVALUATION_EXAMPLE: dict[str, Any] = {
    "prompt": "What is the capital of Australia?",
    "response": "Canberra.",
    "semantic_drift": 0.05,
    "uncertainty": 0.1,
    "factual_support": 0.95,
    "hallucination_probability": 0.02,
    "latency_sec": 0.42,
    "model_name": "gpt-4o-mini",
}


@blp.route("")
class Evaluations(MethodView):
    @blp.doc(operationId="listEvaluations")
    @blp.auth_required()
    @blp.arguments(EvaluationListArgs, location="query")
    @blp.response(200, EvaluationPageSchema)
    @blp.error(404, "`not_found`: `agent_id` names no agent of yours.")
    def get(self, args: dict[str, Any]) -> Page[Evaluation]:
        """List evaluations

        Evaluations of your agents (an admin: everyone's), newest first; filters `agent_id`,
        `hallucinated` and `since`. An agent's API key with the `telemetry` scope reads its own agent's only.
        """
        return service.list_evaluations(current_caller(), **args)

    @blp.doc(operationId="createEvaluation")
    @blp.auth_required()
    @blp.arguments(EvaluationCreateSchema, example=EVALUATION_EXAMPLE)
    @blp.response(201, EvaluationSchema, prebuilt=True)
    @blp.error(
        404, "`not_found`: no such agent, or not yours; a key used for another agent; or a token without `agent_id`."
    )
    def post(self, data: dict[str, Any]) -> Response:
        """Report an evaluation

        With the agent's API key (`telemetry` scope), which names the agent; or as its owner with a
        token and `agent_id`. Linked to the agent's live deployment, if any, whose hallucination
        rule it feeds at once.
        """
        return json_response(service.record(current_caller(), data), 201)


@blp.route("/stats")
class EvaluationStats(MethodView):
    @blp.doc(operationId="getEvaluationStats")
    @blp.auth_required()
    @blp.arguments(EvaluationStatsArgs, location="query")
    @blp.response(200, EvaluationStatsSchema)
    @blp.error(404, "`not_found`: `agent_id` names no agent of yours.")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Get evaluation stats

        Totals and averages over the last `days` days, of all your agents (an admin: all agents) or
        of one (`agent_id`). An agent's API key with the `telemetry` scope reads its own agent's only.
        """
        return service.stats(current_caller(), **args)
