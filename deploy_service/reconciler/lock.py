"""The leader lock that keeps exactly one reconciler active.

PostgreSQL: a session-level advisory lock held on a dedicated connection for as long as the
reconciler leads (it is released by the server if the process dies). SQLite: an exclusive `flock` on a
file beside the database (SQLite is single-host, so every process that opens the file can see it).

A PostgreSQL that does not answer makes `try_acquire` raise after `connect_timeout` seconds instead
of hanging; the loop (`loop.py`) treats that as an outage and retries with backoff.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from typing import Any

from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

ADVISORY_KEY = 0x6465706C6F79  # "deploy"
_memory_lock = threading.Lock()


class LeaderLock:
    """Try to become (and check that we still are) the one active reconciler."""

    def __init__(self, engine: Engine, *, connect_timeout: int = 5) -> None:
        self._engine = engine
        self._connect_timeout = connect_timeout
        self._pg: Any = None
        self._fd: int | None = None
        self._memory = False

    @property
    def held(self) -> bool:
        return self._pg is not None or self._fd is not None or self._memory

    def try_acquire(self) -> bool:
        """Take the lock if free; True when we hold it (already or now).

        Raises:
            Exception: the database did not answer (psycopg's `OperationalError`, an `OSError`...).
        """
        if self.held:
            return self.still_held()
        dialect, url = self._engine.dialect.name, self._engine.url
        if dialect == "postgresql":
            import psycopg

            connection = psycopg.connect(
                url.set(drivername="postgresql").render_as_string(hide_password=False),
                autocommit=True,
                connect_timeout=self._connect_timeout,
            )
            try:
                row = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
            except Exception:
                connection.close()
                raise
            if row and row[0]:
                self._pg = connection
                return True
            connection.close()
            return False
        if dialect == "sqlite" and url.database and url.database != ":memory:":
            fd = os.open(f"{url.database}.reconciler.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            return True
        self._memory = _memory_lock.acquire(blocking=False)
        return self._memory

    def still_held(self) -> bool:
        """Whether the lock is still ours (a dropped PostgreSQL connection loses it)."""
        if self._pg is not None:
            try:
                self._pg.execute("SELECT 1")
            except Exception:  # noqa: BLE001 - any failure: the session (and its lock) is gone
                log.warning("lost the reconciler leader lock (database connection dropped)")
                self._pg = None
                return False
        return self.held

    def release(self) -> None:
        if self._pg is not None:
            try:
                self._pg.close()
            finally:
                self._pg = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._memory:
            _memory_lock.release()
            self._memory = False
