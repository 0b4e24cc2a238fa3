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
    @blp.doc(operationId="listAlerts")
    @blp.auth_required()
    @blp.arguments(AlertListArgs, location="query")
    @blp.response(200, AlertPageSchema)
    def get(self, args: dict[str, Any]) -> Page[Alert]:
        """List alerts

        Alerts of your deployments (an admin: everyone's), most severe first, then most recent;
        filters `status`, `severity` and `deployment_id`.
        """
        return service.list_alerts(current_user(), **args)


@blp.route("/deployments/metrics")
class SystemMetrics(MethodView):
    @blp.doc(operationId="getSystemMetrics", tags=["metrics"])
    @blp.auth_required()
    @blp.response(200, SystemMetricsSchema)
    def get(self) -> dict[str, Any]:
        """Get system metrics

        How every deployment you can see (an admin: all) is doing: counts by status, replicas, deploy
        times, restarts, open alerts and calls through `interact`.
        """
        return system_metrics(current_user())


@blp.route("/deployments/alerts")
class ActiveAlerts(MethodView):
    @blp.doc(operationId="listActiveDeploymentAlerts")
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, AlertPageSchema)
    def get(self, args: dict[str, Any]) -> Page[Alert]:
        """List active alerts

        The `active` alerts (neither acknowledged nor resolved) of every deployment you can see, most
        severe first.
        """
        return service.list_alerts(current_user(), status=AlertStatus.ACTIVE, **args)


@blp.route("/alerts/<string:alert_id>/acknowledge")
class Acknowledge(MethodView):
    @blp.doc(operationId="acknowledgeAlert")
    @blp.auth_required()
    @blp.response(200, AlertSchema)
    @blp.error(404, "`not_found`: no such alert, or not yours.")
    def post(self, alert_id: str) -> Alert:
        """Acknowledge an alert

        Marks an `active` alert as seen; it stays open until its condition clears. An alert that is
        already acknowledged or resolved is returned unchanged.
        """
        return service.acknowledge(current_user(), alert_id)


@blp.route("/alerts/<string:alert_id>/resolve")
class Resolve(MethodView):
    @blp.doc(operationId="resolveAlert")
    @blp.auth_required()
    @blp.response(200, AlertSchema)
    @blp.error(404, "`not_found`: no such alert, or not yours.")
    def post(self, alert_id: str) -> Alert:
        """Resolve an alert

        Closes an alert by hand and notifies your webhooks; if its condition persists, the rule opens
        a new one. Resolving a resolved alert returns it unchanged.
        """
        return service.resolve(current_user(), alert_id)
