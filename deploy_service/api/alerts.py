"""System-wide views: the metrics of every deployment, and alerts (list, acknowledge, resolve)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user
from deploy_service.models import Alert, AlertStatus
from deploy_service.schemas.alert import AlertListArgs, AlertPageSchema, AlertSchema
from deploy_service.schemas.common import PaginationArgs
from deploy_service.schemas.deployment import SystemMetricsSchema
from deploy_service.services import alerts as service
from deploy_service.services.common import Page
from deploy_service.services.system_metrics import system_metrics

blp = Blueprint("alerts", __name__, url_prefix="/v1", description="Alerts raised by the reconciler's rules.")


@blp.route("/alerts")
class Alerts(MethodView):
    @blp.auth_required()
    @blp.arguments(AlertListArgs, location="query")
    @blp.response(200, AlertPageSchema)
    def get(self, args: dict[str, Any]) -> Page[Alert]:
        """Alerts, most severe first (filters `status`, `severity`, `deployment_id`)."""
        return service.list_alerts(current_user(), **args)


@blp.route("/deployments/metrics")
class SystemMetrics(MethodView):
    @blp.auth_required()
    @blp.response(200, SystemMetricsSchema)
    def get(self) -> dict[str, Any]:
        """How every deployment you can see is doing: counts, replicas, deploy times, restarts, alerts, calls."""
        return system_metrics(current_user())


@blp.route("/deployments/alerts")
class ActiveAlerts(MethodView):
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, AlertPageSchema)
    def get(self, args: dict[str, Any]) -> Page[Alert]:
        """The active alerts of every deployment you can see, most severe first."""
        return service.list_alerts(current_user(), status=AlertStatus.ACTIVE, **args)


@blp.route("/alerts/<string:alert_id>/acknowledge")
class Acknowledge(MethodView):
    @blp.auth_required()
    @blp.response(200, AlertSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, alert_id: str) -> Alert:
        """Acknowledge an alert: seen, still open until its condition clears."""
        return service.acknowledge(current_user(), alert_id)


@blp.route("/alerts/<string:alert_id>/resolve")
class Resolve(MethodView):
    @blp.auth_required()
    @blp.response(200, AlertSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, alert_id: str) -> Alert:
        """Resolve an alert by hand (a new one opens if the condition persists)."""
        return service.resolve(current_user(), alert_id)
