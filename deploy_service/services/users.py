"""Users: the admin's management of accounts (list, read, change role, deactivate), and user-centric views.

Who may call these is the permission table's business (`permissions`: the user routes are `admin`); what
holds whoever calls them is here: the last active admin can be neither demoted nor deactivated, and a
deactivation ends the user's login sessions and personal tokens in the same commit (its agents' keys stop
working too: `api_keys.authenticate` reads the owner's `is_active` with the key).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from deploy_service.errors import Conflict, Forbidden, NotFound
from deploy_service.extensions import db
from deploy_service.models import ROLE_ADMIN, AuthSession, Principal, User
from deploy_service.models.types import utcnow
from deploy_service.services.agents import DeployedAgent, deployed_agents
from deploy_service.services.common import Page, paginate
from deploy_service.services.personal_tokens import revoke_all_of


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


def list_users(
    *, skip: int, limit: int, role: str | None = None, q: str | None = None, is_active: bool | None = None
) -> Page[User]:
    """Every account, oldest first; filters `role`, `is_active` and `q` (a case-insensitive part of the email)."""
    stmt = select(User)
    if role is not None:
        stmt = stmt.where(User.role == role)
    if is_active is not None:
        stmt = stmt.where(User.is_active.is_(is_active))
    if q:
        escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(func.lower(User.email).like(f"%{escaped}%", escape="\\"))
    return paginate(stmt.order_by(User.created_at, User.id), skip=skip, limit=limit)


def get_user(user_id: str) -> User:
    """One account.

    Raises:
        NotFound: no such user.
    """
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("User not found.")
    return user


def update_user(user_id: str, changes: dict[str, Any]) -> User:
    """Change an account's `role`, `is_active` or `full_name`.

    Demoting or deactivating an active admin is one conditional write (`_step_down`), so two admins demoting
    each other at once cannot leave none.

    Raises:
        NotFound: no such user.
        Conflict: the change would leave no active admin.
    """
    user = get_user(user_id)
    loses_admin = (
        user.role == ROLE_ADMIN
        and user.is_active
        and (changes.get("role", ROLE_ADMIN) != ROLE_ADMIN or changes.get("is_active", True) is False)
    )
    deactivated = user.is_active and changes.get("is_active") is False
    if loses_admin:
        _step_down(user, role=changes.get("role", user.role), is_active=changes.get("is_active", user.is_active))
    for field in ("role", "is_active", "full_name"):
        if field in changes:
            setattr(user, field, changes[field])
    if deactivated:
        now = utcnow()
        db.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        revoke_all_of(user.id)
    db.session.commit()
    return user


def _step_down(user: User, *, role: str, is_active: bool) -> None:
    """Demote or deactivate an active admin, only while another active admin remains.

    The active admins' rows are locked first (PostgreSQL: a concurrent step-down waits, then sees this one),
    and the write itself is conditional on another active admin (SQLite runs one writer at a time, and a
    single statement sees every commit before it), so of two admins stepping each other down one is refused.

    Raises:
        Conflict: no other active admin.
    """
    active_admin = (User.role == ROLE_ADMIN) & User.is_active.is_(True)
    db.session.scalars(select(User.id).where(active_admin).with_for_update()).all()
    others = select(func.count()).select_from(User).where(active_admin, User.id != user.id).scalar_subquery()
    written = db.session.execute(
        update(User)
        .where(User.id == user.id, others >= 1)
        .values(role=role, is_active=is_active, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if written.rowcount == 0:  # type: ignore[attr-defined]
        db.session.rollback()
        raise Conflict("This is the last active admin: make another user admin first.", details={"user_id": user.id})
    user.role, user.is_active = role, is_active
