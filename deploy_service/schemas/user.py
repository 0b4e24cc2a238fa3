"""Bodies of the user routes."""

from __future__ import annotations

from marshmallow import fields

from deploy_service.schemas.agent import AgentSchema
from deploy_service.schemas.common import page_schema
from deploy_service.schemas.deployment import DeploymentSummarySchema


class DeployedAgentSchema(AgentSchema):
    """An agent with a summary of its live deployment."""

    deployment = fields.Nested(DeploymentSummarySchema, dump_only=True)


DeployedAgentPageSchema = page_schema(DeployedAgentSchema, "DeployedAgentPage")
