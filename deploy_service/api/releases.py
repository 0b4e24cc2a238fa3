"""Release routes of a deployment (`/v1/deployments/<id>/releases`, `/rollback`), on the deployments blueprint."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import current_user
from deploy_service.api.deployments import CHANGED, ENGINE_DOWN, NO_DEPLOYMENT, QUOTA, blp
from deploy_service.models import Deployment, Release
from deploy_service.schemas.common import PaginationArgs
from deploy_service.schemas.deployment import DeploymentSchema
from deploy_service.schemas.release import ReleaseDetailSchema, ReleasePageSchema, RollbackSchema
from deploy_service.services import releases as service
from deploy_service.services.common import Page

NO_RELEASE = "`not_found`: no such deployment (or it is someone else's), or no release of that number."


@blp.route("/<string:deployment_id>/releases")
class Releases(MethodView):
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, ReleasePageSchema)
    @blp.error(404, NO_DEPLOYMENT)
    @blp.doc(operationId="listReleases")
    def get(self, args: dict[str, Any], deployment_id: str) -> Page[Release]:
        """List a deployment's releases

        Every rollout that changed what runs (the deploy, a restart with a change, a rollback), newest
        first, with its status: `pending` (rolling out), `active` (what runs), `superseded`, `failed`
        or `rolled_back`.
        """
        return service.list_releases(current_user(), deployment_id, **args)


@blp.route("/<string:deployment_id>/releases/<int:number>")
class ReleaseItem(MethodView):
    @blp.auth_required()
    @blp.response(200, ReleaseDetailSchema)
    @blp.error(404, NO_RELEASE)
    @blp.doc(operationId="getRelease")
    def get(self, deployment_id: str, number: int) -> service.ReleaseDetail:
        """Get a release

        One release with `changes`: each field that differs from the release before it, by its
        flattened path (`image`, `source.commit`, `config.env.MODE`, `config.secrets.NAME` showing the
        secret's name, never a value). Release 1 has none.
        """
        return service.get_release(current_user(), deployment_id, number)


@blp.route("/<string:deployment_id>/rollback")
class Rollback(MethodView):
    @blp.auth_required()
    @blp.arguments(RollbackSchema, example={"release": 1})
    @blp.response(202, DeploymentSchema)
    @blp.error(
        400,
        "`validation_error`: a bad body, or the target's image is one no agent may name any more (a private "
        "registry not in `ALLOWED_REGISTRIES`).",
    )
    @blp.error(403, QUOTA)
    @blp.error(404, NO_RELEASE)
    @blp.error(
        409,
        "`invalid_state`: the deployment is deploying or killed, the target is the current release, or no "
        "earlier release was ever active; or " + CHANGED,
    )
    @blp.error(503, ENGINE_DOWN)
    @blp.doc(operationId="rollbackDeployment")
    def post(self, data: dict[str, Any], deployment_id: str) -> Deployment:
        """Roll a deployment back

        Makes a new release (reason `rollback`, `rollback_of` the target's number) with the image and
        config of release `release` (default: the newest before the current one that was ever
        `active`) and rolls it out: a rolling update from `running`/`ready`, a fresh start (back to
        `deploying`) from `stopped`/`failed`. Answers 202 with the deployment at once.

        The new release runs the target's image by its recorded `image_id`, whatever its tag names now. For
        a git agent, the target's own image runs again while the engine has it (`RELEASE_IMAGES_KEPT`);
        once it was removed, the target's recorded `source.commit` is built again, never the branch's
        head. If the rollout fails (its image cannot be prepared, its replicas crash or miss the progress
        deadline) while the current release serves, it is rolled back automatically (`AUTO_ROLLBACK`).
        """
        return service.rollback(current_user(), deployment_id, release=data.get("release"))
