"""Writing the reconciler's heartbeat: the time of the last completed pass, read by `/health/ready`.

A pass that completes records it (`models/heartbeat.py`), at most every `every` seconds so a busy
loop (a pass per tick) does not add a write per pass. Readiness, in any process, reads the row.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from deploy_service.extensions import db
from deploy_service.models.heartbeat import RECONCILER, ReconcilerHeartbeat
from deploy_service.models.types import utcnow


def this_process() -> str:
    """`host:pid`, naming the process that wrote a heartbeat."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_pass(*, name: str = RECONCILER, holder: str | None = None, seconds: float | None = None) -> None:
    """Set the named reconciler's last completed pass to now, and how long it took (commits; needs an app
    context)."""
    now, holder = utcnow(), holder or this_process()
    values = {"last_pass_at": now, "holder": holder, "last_pass_seconds": seconds}
    updated = db.session.execute(update(ReconcilerHeartbeat).where(ReconcilerHeartbeat.name == name).values(values))
    if not getattr(updated, "rowcount", 0):
        db.session.add(ReconcilerHeartbeat(name=name, **values))
    try:
        db.session.commit()
    except IntegrityError:  # another process inserted the row first: its beat is as fresh as ours
        db.session.rollback()


class Heartbeat:
    """Records completed passes, throttled to one write per `every` seconds."""

    def __init__(self, *, every: float, name: str = RECONCILER, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.name = name
        self._clock = clock
        self._written_at: float | None = None

    def beat(self, seconds: float | None = None) -> None:
        """A pass completed (in `seconds`): write it unless a write happened less than `every` seconds ago."""
        now = self._clock()
        if self._written_at is not None and now - self._written_at < self.every:
            return
        record_pass(name=self.name, seconds=None if seconds is None else round(seconds, 6))
        self._written_at = now
