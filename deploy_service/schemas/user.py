"""Bodies of the user routes."""

from __future__ import annotations

from marshmallow import fields

from deploy_service.schemas.agent import AgentSchema
from deploy_service.schemas.common import page_schema


class DeployedAgentSchema(AgentSchema):
    """An agent with a summary of its live deployment."""

    deployment = fields.Dict(
        allow_none=True, dump_only=True, metadata={"description": "Summary of the live deployment."}
    )


DeployedAgentPageSchema = page_schema(DeployedAgentSchema, "DeployedAgentPage")
