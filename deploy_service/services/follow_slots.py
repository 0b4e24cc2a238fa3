"""At most `LOG_FOLLOW_MAX_PER_USER` open `follow=true` log streams per user, across every worker.

Each open stream holds a row of `log_follow_slots` (see `models.log_follow` for why the database is the
place). `open_slot` counts the user's live rows and adds one in a single transaction, serialised per
user: the user's row is locked first on PostgreSQL (so two workers opening at once cannot both count
three of four), and on SQLite the first write (the purge of the user's lapsed rows) takes the one write
lock before the count is read. One stream over the limit is a 429 `rate_limited`, whose `Retry-After`
is when the user's first slot may lapse.

The open stream then keeps its slot with `Slot.renew` (once a poll, writing at most every third of the
lease) and gives it back with `Slot.release` when it ends in any way: the deployment ended, the time
limit, the client gone (the response is closed, and the stream with it). Both run on a short
connection of their own: a stream is closed by the server, perhaps after its request context is gone.
A worker killed mid-stream releases nothing; its rows stop counting when their lease lapses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select, update

from deploy_service.errors import RateLimited
from deploy_service.extensions import db
from deploy_service.models import FollowSlot, Principal, User
from deploy_service.models.types import new_id, utcnow

SLOTS = FollowSlot.__table__


@dataclass
class Slot:
    """An open stream's row: renewed while it runs, deleted when it ends."""

    id: str
    engine: Engine
    lease: float
    ends_at: datetime
    renewed_at: datetime

    def renew(self) -> None:
        """Move the lease ahead (a write only when a third of it has passed since the last one)."""
        now = utcnow()
        if now - self.renewed_at < timedelta(seconds=self.lease / 3):
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(SLOTS).where(SLOTS.c.id == self.id).values(expires_at=_expiry(now, self.lease, self.ends_at))
            )
        self.renewed_at = now

    def release(self) -> None:
        """Give the slot back (again is harmless)."""
        with self.engine.begin() as connection:
            connection.execute(delete(SLOTS).where(SLOTS.c.id == self.id))


def _expiry(now: datetime, lease: float, ends_at: datetime) -> datetime:
    return min(now + timedelta(seconds=lease), ends_at)


def open_slot(actor: Principal, deployment_id: str, *, limit: int, lease: float, longest: float) -> Slot:
    """Take one of the user's `limit` slots for a stream of `deployment_id` lasting at most `longest` seconds.

    Raises:
        RateLimited: the user already has `limit` open streams (429 `rate_limited`, with `Retry-After`).
    """
    now = utcnow()
    db.session.execute(select(User.id).where(User.id == actor.id).with_for_update())
    db.session.execute(delete(FollowSlot).where(FollowSlot.user_id == actor.id, FollowSlot.expires_at <= now))
    live = db.session.scalars(select(FollowSlot.expires_at).where(FollowSlot.user_id == actor.id)).all()
    if len(live) >= limit:
        db.session.commit()  # the purge of lapsed slots stands
        raise RateLimited(
            f"You already follow {len(live)} log streams, the most one user may ({limit} at once): "
            "close one, or retry later.",
            retry_after=(min(live) - now).total_seconds(),
        )
    ends_at = now + timedelta(seconds=longest)
    slot_id = new_id()  # known without reading the row back after the commit
    slot = FollowSlot(
        id=slot_id,
        user_id=actor.id,
        deployment_id=deployment_id,
        opened_at=now,
        ends_at=ends_at,
        expires_at=_expiry(now, lease, ends_at),
    )
    db.session.add(slot)
    db.session.commit()
    return Slot(id=slot_id, engine=db.engine, lease=lease, ends_at=ends_at, renewed_at=now)
