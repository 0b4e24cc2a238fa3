"""User routes: an admin's management of accounts, and a user's deployed agents."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from deploy_service.api.common import Blueprint, current_user
from deploy_service.models import User
from deploy_service.schemas.common import PaginationArgs
from deploy_service.schemas.user import (
    AccountPageSchema,
    AccountSchema,
    DeployedAgentPageSchema,
    UserListArgs,
    UserUpdateSchema,
)
from deploy_service.services import users as user_service
from deploy_service.services.common import Page

blp = Blueprint("users", __name__, url_prefix="/v1/users", description="Users.")


@blp.route("")
class Users(MethodView):
    @blp.doc(operationId="listUsers")
    @blp.auth_required()
    @blp.arguments(UserListArgs, location="query")
    @blp.response(200, AccountPageSchema)
    def get(self, args: dict[str, Any]) -> Page[User]:
        """List users

        Admins only: every account, oldest first; filters `role`, `is_active` and `q` (part of the email).
        """
        return user_service.list_users(**args)


@blp.route("/<id:user_id>")
class UserItem(MethodView):
    @blp.doc(operationId="getUser")
    @blp.auth_required()
    @blp.response(200, AccountSchema)
    @blp.error(404, "`not_found`: no such user.")
    def get(self, user_id: str) -> User:
        """Get a user

        Admins only.
        """
        return user_service.get_user(user_id)

    @blp.doc(operationId="updateUser")
    @blp.auth_required()
    @blp.arguments(UserUpdateSchema, example={"role": "user"})
    @blp.response(200, AccountSchema)
    @blp.error(404, "`not_found`: no such user.")
    @blp.error(409, "`conflict`: the change would demote or deactivate the last active admin.")
    def patch(self, data: dict[str, Any], user_id: str) -> User:
        """Update a user

        Admins only: change the role (`admin`, `developer`, `user`), deactivate or reactivate, rename.
        Deactivating ends the user's logins and personal tokens at once (they stay revoked when the user is
        reactivated) and makes its agents' API keys answer 401 while it is inactive. The last active admin
        cannot be demoted or deactivated (409).
        """
        return user_service.update_user(user_id, data)


@blp.route("/<string:user_id>/deployed-agents")
class DeployedAgents(MethodView):
    @blp.doc(operationId="listDeployedAgentsOfUser")
    @blp.auth_required()
    @blp.arguments(PaginationArgs, location="query")
    @blp.response(200, DeployedAgentPageSchema)
    @blp.error(403, "`forbidden`: the user is someone else and you are not an admin; or an API key was sent instead.")
    @blp.error(404, "`not_found`: an admin asked for a user that does not exist.")
    def get(self, args: dict[str, Any], user_id: str) -> Page[Any]:
        """List a user's deployed agents

        The user's agents that have a live deployment, each with a summary of it, newest agent first.
        A user may ask for itself, an admin for anyone.
        """
        return user_service.deployed_agents_of(current_user(), user_id, **args)
