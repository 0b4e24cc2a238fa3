"""Release bodies: a release, one with its changes, the list, and the rollback request."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from deploy_service.models import ReleaseReason, ReleaseStatus
from deploy_service.schemas.common import Choice, Computed, JsonBodySchema, ResponseSchema, page_schema
from deploy_service.schemas.deployment import DeploymentConfigSchema, ReleaseSourceSchema

ANY_JSON = {"description": "Any JSON value (null: not set)."}


class ReleaseSchema(ResponseSchema):
    """A numbered, immutable snapshot of what a deployment runs, and how its rollout went."""

    number = fields.Integer(metadata={"description": "1, 2, 3... per deployment; the deployment's `revision`."})
    deployment_id = fields.String()
    status = Choice(ReleaseStatus)
    reason = Choice(ReleaseReason)
    image = fields.String(allow_none=True, metadata={"description": "The image reference its replicas run."})
    image_id = fields.String(
        allow_none=True, metadata={"description": "The engine's image id (`sha256:...`); null until recorded."}
    )
    source = fields.Nested(ReleaseSourceSchema, allow_none=True, metadata={"description": "Null for an image."})
    config = Computed("_config", schema=DeploymentConfigSchema)
    rollback_of = fields.Integer(allow_none=True, metadata={"description": "A rollback's target release number."})
    created_by = fields.String(allow_none=True, metadata={"description": "The user who made it (null: removed)."})
    created_at = fields.DateTime()
    activated_at = fields.DateTime(allow_none=True, metadata={"description": "When it became active."})
    ended_at = fields.DateTime(allow_none=True, metadata={"description": "When it stopped being active or pending."})
    error = fields.String(allow_none=True, metadata={"description": "Why it failed."})

    def _config(self, release: Any) -> dict[str, Any]:
        return {
            key: value for key, value in (release.config or {}).items() if key not in ("overrides", "secret_versions")
        }


class ChangeSchema(ResponseSchema):
    """One field that differs from the release before."""

    field = fields.String(
        metadata={"description": "A flattened path: `image`, `source.commit`, `config.env.MODE`...", "example": "image"}
    )
    from_ = fields.Raw(data_key="from", attribute="before", allow_none=True, metadata=ANY_JSON)
    to = fields.Raw(attribute="after", allow_none=True, metadata=ANY_JSON)


class ReleaseDetailSchema(ReleaseSchema):
    """A release with what changed since the release before it (none for release 1); a secret shows its
    name, never a value."""

    changes = fields.List(fields.Nested(ChangeSchema))


ReleasePageSchema = page_schema(ReleaseSchema, "ReleasePage")


class RollbackSchema(JsonBodySchema):
    """Which release to go back to."""

    release = fields.Integer(
        validate=validate.Range(min=1),
        metadata={"description": "The release number; default: the newest before the current one that was active."},
    )
