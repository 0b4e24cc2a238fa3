"""SQLAlchemy 2.0 typed models, one module per aggregate. Models never commit."""

from deploy_service.models.agent import DEFAULT_RESTART_POLICY, Agent, AgentKind, AgentStatus, RestartPolicy
from deploy_service.models.alert import Alert, AlertKind, AlertSeverity, AlertStatus
from deploy_service.models.api_key import SCOPES, ApiKey, ApiKeyScope, Invocation, InvocationStatus
from deploy_service.models.deployment import (
    SERVING,
    WITHOUT_REPLICAS,
    Deployment,
    DeploymentEvent,
    DeploymentResult,
    DeploymentStatus,
    DesiredState,
    Instance,
    InstanceStatus,
    LogSource,
    LogStream,
    is_ready,
    is_running,
)
from deploy_service.models.evaluation import Evaluation
from deploy_service.models.heartbeat import ReconcilerHeartbeat
from deploy_service.models.log_follow import FollowSlot
from deploy_service.models.metrics import ContainerSample
from deploy_service.models.personal_token import PersonalToken, TokenScope
from deploy_service.models.release import Release, ReleaseReason, ReleaseStatus
from deploy_service.models.replica_log import ReplicaLog
from deploy_service.models.secret import Secret
from deploy_service.models.user import (
    FIRST_ACCOUNT_SLOT,
    ROLE_ADMIN,
    ROLE_DEVELOPER,
    ROLE_USER,
    ROLES,
    AuthSession,
    FirstAccount,
    Principal,
    Role,
    User,
)
from deploy_service.models.webhook import ALERT_EVENTS, DeliveryStatus, Webhook, WebhookDelivery, WebhookEvent

__all__ = [
    "FIRST_ACCOUNT_SLOT",
    "ROLES",
    "SERVING",
    "ALERT_EVENTS",
    "WITHOUT_REPLICAS",
    "SCOPES",
    "ROLE_ADMIN",
    "ROLE_DEVELOPER",
    "ROLE_USER",
    "DEFAULT_RESTART_POLICY",
    "PersonalToken",
    "TokenScope",
    "Agent",
    "AgentKind",
    "AgentStatus",
    "RestartPolicy",
    "Alert",
    "AlertKind",
    "AlertSeverity",
    "AlertStatus",
    "ApiKey",
    "ApiKeyScope",
    "AuthSession",
    "ContainerSample",
    "Deployment",
    "DeploymentEvent",
    "DeploymentResult",
    "DeliveryStatus",
    "DeploymentStatus",
    "DesiredState",
    "Evaluation",
    "FirstAccount",
    "FollowSlot",
    "Instance",
    "InstanceStatus",
    "LogSource",
    "LogStream",
    "Invocation",
    "InvocationStatus",
    "Principal",
    "Role",
    "ReconcilerHeartbeat",
    "Release",
    "ReleaseReason",
    "ReleaseStatus",
    "ReplicaLog",
    "Secret",
    "User",
    "Webhook",
    "WebhookDelivery",
    "WebhookEvent",
    "is_ready",
    "is_running",
]
