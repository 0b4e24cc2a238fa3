"""Helpers shared by the services: pages of results, owner scoping, and a credential's `last_used_at`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, or_, select, update

from deploy_service.extensions import db
from deploy_service.models import Principal
from deploy_service.settings import current_settings

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: the contract's `{items, total, skip, limit}`."""

    items: Sequence[T]
    total: int
    skip: int
    limit: int


def paginate(stmt: Select[Any], *, skip: int, limit: int) -> Page[Any]:
    """Run `stmt` (already ordered) for one page, and count all its rows."""
    total = db.session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    items = db.session.scalars(stmt.offset(skip).limit(limit)).all() if total > skip else []
    return Page(items=items, total=total, skip=skip, limit=limit)


def scope_to_owner(stmt: Select[Any], owner_column: Any, actor: Principal) -> Select[Any]:
    """Restrict a query to what `actor` owns, unless `actor` is an admin."""
    return stmt if actor.is_admin else stmt.where(owner_column == actor.id)


def record_use(model: Any, row_id: str, last_used_at: datetime | None, now: datetime) -> bool:
    """Set a credential's (an agent key's, a personal token's) `last_used_at` to `now` when the stored one is
    older than `API_KEY_LAST_USED_RESOLUTION_SECONDS`; whether it was due.

    One conditional UPDATE, committed: of concurrent requests on any worker, only the first writes.
    """
    resolution = timedelta(seconds=current_settings().auth.api_key_last_used_resolution)
    if last_used_at is not None and now - last_used_at < resolution:
        return False
    db.session.execute(
        update(model)
        .where(model.id == row_id, or_(model.last_used_at.is_(None), model.last_used_at <= now - resolution))
        .values(last_used_at=now)
    )
    db.session.commit()
    return True
