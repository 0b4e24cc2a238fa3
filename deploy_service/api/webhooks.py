"""Webhook routes: register, list, read, change, delete, and read the delivery log."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user, links
from deploy_service.models import Webhook, WebhookDelivery
from deploy_service.schemas.common import PaginationArgs
from deploy_service.schemas.webhook import (
    CreatedWebhookSchema,
    DeliveryPageSchema,
    WebhookCreateSchema,
    WebhookPageSchema,
    WebhookSchema,
    WebhookUpdateSchema,
)
from deploy_service.services import webhooks as service
from deploy_service.services.common import Page

blp = Blueprint(
    "webhooks", __name__, url_prefix="/v1/webhooks", description="Signed alert and deployment notifications."
)


@blp.route("")
class Webhooks(MethodView):
    @blp.doc(operationId="listWebhooks")
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, WebhookPageSchema)
    def get(self, args: dict[str, Any]) -> Page[Webhook]:
        """List webhooks

        Your webhooks (an admin: everyone's), never their secrets.
        """
        return service.list_webhooks(current_user(), **args)

    @blp.doc(operationId="createWebhook")
    @blp.auth_required()
    @blp.arguments(
        WebhookCreateSchema,
        example={
            "url": "https://hooks.example.com/deploy-alerts",
            "severities": ["critical", "warning"],
            "events": ["alert.raised", "alert.resolved", "release.failed", "deployment.failed"],
        },
    )
    @blp.response(201, CreatedWebhookSchema)
    @blp.doc(
        **links(
            201,
            "webhook_id",
            "id",
            ("GetWebhook", "get", "/v1/webhooks/{webhook_id}"),
            ("UpdateWebhook", "patch", "/v1/webhooks/{webhook_id}"),
            ("DeleteWebhook", "delete", "/v1/webhooks/{webhook_id}"),
            ("WebhookDeliveries", "get", "/v1/webhooks/{webhook_id}/deliveries"),
        )
    )
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Register a webhook

        The `events` it subscribes to (by default `alert.raised` and `alert.resolved`: your alerts
        matching `severities` and `kinds`, all by default; also `release.activated`, `release.failed`
        and `deployment.failed` of your deployments) are POSTed to `url` as they happen, signed with the
        secret that is in this response only. An unknown event name, or a URL whose host does not
        resolve to a public address, is a 400.
        """
        webhook, secret = service.create_webhook(
            current_user(),
            url=data["url"],
            severities=data.get("severities"),
            kinds=data.get("kinds"),
            events=data.get("events"),
        )
        return {
            "id": webhook.id,
            "url": webhook.url,
            "severities": webhook.severities,
            "kinds": webhook.kinds,
            "events": webhook.events,
            "created_at": webhook.created_at,
            "secret": secret,
        }


@blp.route("/<string:webhook_id>")
class WebhookItem(MethodView):
    @blp.doc(operationId="getWebhook")
    @blp.auth_required()
    @blp.response(200, WebhookSchema)
    @blp.error(404, "`not_found`: no such webhook, or not yours.")
    def get(self, webhook_id: str) -> Webhook:
        """Get a webhook

        Its URL, filters and events, never its secret.
        """
        return service.get_webhook(current_user(), webhook_id)

    @blp.doc(operationId="updateWebhook")
    @blp.auth_required()
    @blp.arguments(WebhookUpdateSchema, example={"events": ["alert.raised", "release.activated", "release.failed"]})
    @blp.response(200, WebhookSchema)
    @blp.error(404, "`not_found`: no such webhook, or not yours.")
    def patch(self, data: dict[str, Any], webhook_id: str) -> Webhook:
        """Change a webhook

        Sets the fields given (`url`, `severities`, `kinds`, `events`); the others and the secret stay.
        Deliveries already queued are sent as they were. An unknown event name, an empty `events`, or a
        URL the service would not call is a 400.
        """
        return service.update_webhook(current_user(), webhook_id, data)

    @blp.doc(operationId="deleteWebhook")
    @blp.auth_required()
    @blp.response(204)
    @blp.error(404, "`not_found`: no such webhook, or not yours.")
    def delete(self, webhook_id: str) -> None:
        """Delete a webhook

        The webhook and its delivery log; queued deliveries are dropped.
        """
        service.delete_webhook(current_user(), webhook_id)


@blp.route("/<string:webhook_id>/deliveries")
class Deliveries(MethodView):
    @blp.doc(operationId="listWebhookDeliveries")
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, DeliveryPageSchema)
    @blp.error(404, "`not_found`: no such webhook, or not yours.")
    def get(self, args: dict[str, Any], webhook_id: str) -> Page[WebhookDelivery]:
        """List a webhook's deliveries

        The delivery log, newest first: each event's payload, attempts, the receiver's answers and
        errors.
        """
        return service.list_deliveries(current_user(), webhook_id, **args)
