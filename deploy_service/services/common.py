"""Helpers shared by the services: pages of results and owner scoping."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select

from deploy_service.extensions import db
from deploy_service.models import Principal

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
