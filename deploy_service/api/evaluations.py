"""Evaluation routes: agents report (with their key's `telemetry` scope), owners list and aggregate."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_caller, current_user
from deploy_service.models import Evaluation
from deploy_service.models.api_key import SCOPE_TELEMETRY
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


@blp.route("")
class Evaluations(MethodView):
    @blp.auth_required()
    @blp.arguments(EvaluationListArgs, location="query")
    @blp.response(200, EvaluationPageSchema)
    def get(self, args: dict[str, Any]) -> Page[Evaluation]:
        """Evaluations of your agents, newest first (filters `agent_id`, `hallucinated`, `since`)."""
        return service.list_evaluations(current_user(), **args)

    @blp.auth_required(key_scope=SCOPE_TELEMETRY)
    @blp.arguments(EvaluationCreateSchema)
    @blp.response(201, EvaluationSchema)
    @blp.alt_response(
        404, response="NOT_FOUND", description="No such agent, or a user token without `agent_id` (no agent named)."
    )
    def post(self, data: dict[str, Any]) -> Evaluation:
        """Report an evaluation: with the agent's key, or as its owner with `agent_id`."""
        return service.record(current_caller(), data)


@blp.route("/stats")
class EvaluationStats(MethodView):
    @blp.auth_required()
    @blp.arguments(EvaluationStatsArgs, location="query")
    @blp.response(200, EvaluationStatsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Totals and averages over the last `days` days (all your agents, or one)."""
        return service.stats(current_user(), **args)
