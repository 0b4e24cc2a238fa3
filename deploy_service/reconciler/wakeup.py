"""How the reconciler waits between passes, and how it is woken early.

It returns as soon as the desired state changes: the in-process event (same process), a PostgreSQL
`NOTIFY` (other processes), or on SQLite a change of `PRAGMA data_version` (another connection
committed). Otherwise it sleeps until the timeout the pass asked for.

The `LISTEN` connection is reconnected (every `RECONNECT_SECONDS` at most) when it drops, e.g. when
PostgreSQL restarts; notifications sent while it was down are lost, so a reconnection counts as a
wake-up and the reconciler makes a pass at once.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from sqlalchemy.engine import Engine

from deploy_service.services.notify import CHANNEL, local_wakeup

log = logging.getLogger(__name__)
SLICE_SECONDS = 0.05
RECONNECT_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5


class Waiter:
    def __init__(self, engine: Engine, *, connect_timeout: int = CONNECT_TIMEOUT_SECONDS) -> None:
        self._connect_timeout = connect_timeout
        self._pg: Any = None
        self._pg_url: str | None = None
        self._pg_retry_at = 0.0
        self._sqlite: sqlite3.Connection | None = None
        self._version: int | None = None
        url = engine.url
        try:
            if engine.dialect.name == "postgresql":
                self._pg_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
                if not self._listen():
                    log.warning("cannot LISTEN for wake-ups yet; retrying (periodic resyncs meanwhile)")
            elif engine.dialect.name == "sqlite" and url.database and url.database != ":memory:":
                self._sqlite = sqlite3.connect(url.database, check_same_thread=False, isolation_level=None)
                self._version = self._data_version()
        except Exception:  # noqa: BLE001 - without a cross-process signal, resyncs still converge
            log.warning("cross-process wake-ups unavailable; relying on periodic resync", exc_info=True)

    def _listen(self) -> bool:
        """(Re)open the `LISTEN` connection; False (and a retry later) when the server does not answer."""
        import psycopg

        try:
            connection = psycopg.connect(self._pg_url or "", autocommit=True, connect_timeout=self._connect_timeout)
            connection.execute(f"LISTEN {CHANNEL}")
        except Exception:  # noqa: BLE001 - retried; resyncs converge meanwhile
            log.debug("cannot LISTEN yet; retrying in %ss", RECONNECT_SECONDS, exc_info=True)
            self._pg_retry_at = time.monotonic() + RECONNECT_SECONDS
            return False
        self._pg = connection
        return True

    def _data_version(self) -> int | None:
        if self._sqlite is None:
            return None
        row = self._sqlite.execute("PRAGMA data_version").fetchone()
        return int(row[0]) if row else None

    def _woken_by_other_process(self) -> bool:
        if self._pg is None and self._pg_url is not None and time.monotonic() >= self._pg_retry_at:
            if self._listen():
                log.info("LISTEN connection re-established")
                return True  # what was notified while it was down is lost: look now
        if self._pg is not None:
            try:
                woken = False
                for _ in self._pg.notifies(timeout=0.0, stop_after=64):
                    woken = True
                return woken
            except Exception:  # noqa: BLE001
                log.warning("LISTEN connection lost; reconnecting (periodic resyncs meanwhile)", exc_info=True)
                self._discard_pg()
        if self._sqlite is not None:
            try:
                version = self._data_version()
            except sqlite3.Error:
                return False
            if version != self._version:
                self._version = version
                return True
        return False

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True when woken early by a desired-state change."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if local_wakeup.wait(min(SLICE_SECONDS, remaining)):
                local_wakeup.clear()
                return True
            if self._woken_by_other_process():
                return True

    def _discard_pg(self) -> None:
        connection, self._pg = self._pg, None
        self._pg_retry_at = time.monotonic() + RECONNECT_SECONDS
        try:
            connection.close()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        self._pg_url = None
        for connection in (self._pg, self._sqlite):
            if connection is not None:
                try:
                    connection.close()
                except Exception:  # noqa: BLE001
                    pass
