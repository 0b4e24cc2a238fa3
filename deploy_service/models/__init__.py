"""SQLAlchemy 2.0 typed models, one module per aggregate. Models never commit."""

from deploy_service.models.agent import AGENT_DEPLOYED, AGENT_IDLE, AGENT_STATUSES, AGENT_STOPPED, Agent
from deploy_service.models.alert import Alert
from deploy_service.models.api_key import SCOPES, ApiKey, Invocation
from deploy_service.models.deployment import (
    DESIRED_DELETED,
    DESIRED_RUNNING,
    DESIRED_STOPPED,
    Deployment,
    DeploymentEvent,
    DeploymentResult,
    Instance,
)
from deploy_service.models.evaluation import Evaluation
from deploy_service.models.heartbeat import ReconcilerHeartbeat
from deploy_service.models.metrics import ContainerSample
from deploy_service.models.secret import Secret
from deploy_service.models.user import ROLE_ADMIN, ROLE_USER, ROLES, AuthSession, Principal, User
from deploy_service.models.webhook import Webhook, WebhookDelivery

__all__ = [
    "AGENT_DEPLOYED",
    "AGENT_IDLE",
    "AGENT_STATUSES",
    "AGENT_STOPPED",
    "DESIRED_DELETED",
    "DESIRED_RUNNING",
    "DESIRED_STOPPED",
    "ROLES",
    "SCOPES",
    "ROLE_ADMIN",
    "ROLE_USER",
    "Agent",
    "Alert",
    "ApiKey",
    "AuthSession",
    "ContainerSample",
    "Deployment",
    "DeploymentEvent",
    "DeploymentResult",
    "Evaluation",
    "Instance",
    "Invocation",
    "Principal",
    "ReconcilerHeartbeat",
    "Secret",
    "User",
    "Webhook",
    "WebhookDelivery",
]
