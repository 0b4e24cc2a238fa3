"""User-centric views across resources."""

from __future__ import annotations

from deploy_service.errors import Forbidden, NotFound
from deploy_service.extensions import db
from deploy_service.models import Principal, User
from deploy_service.services.agents import DeployedAgent, deployed_agents
from deploy_service.services.common import Page


def deployed_agents_of(actor: Principal, user_id: str, *, skip: int, limit: int) -> Page[DeployedAgent]:
    """The agents of `user_id` that have a live deployment.

    Raises:
        Forbidden: the caller is neither that user nor an admin.
        NotFound: an admin asked for a user that does not exist.
    """
    if actor.id != user_id and not actor.is_admin:
        raise Forbidden("You may only list your own deployed agents.")
    if actor.id != user_id and db.session.get(User, user_id) is None:
        raise NotFound("User not found.")
    return deployed_agents(user_id, skip=skip, limit=limit)
