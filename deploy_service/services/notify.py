"""Wake the reconciler when desired state changes, so a deploy never waits for a poll interval.

In the same process (`python app.py`) a `threading.Event` does it. Across processes (gunicorn web
workers and a separate `flask reconcile`), PostgreSQL's `NOTIFY` reaches the reconciler's `LISTEN`;
on SQLite the reconciler watches `PRAGMA data_version`, which changes whenever another connection
commits, so no extra signal is needed there.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import text

from deploy_service.extensions import db

CHANNEL = "deploy_service_reconcile"
log = logging.getLogger(__name__)

local_wakeup = threading.Event()


def desired_state_changed() -> None:
    """Tell the reconciler (in this process and in others) to run a pass now. Call after the commit."""
    local_wakeup.set()
    if db.engine.dialect.name != "postgresql":
        return
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            connection.commit()
    except Exception:  # noqa: BLE001 - a lost wake-up only delays the pass until the next resync
        log.warning("could not notify the reconciler; it will catch up at its next resync", exc_info=True)
