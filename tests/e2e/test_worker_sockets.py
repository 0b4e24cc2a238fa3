"""How gunicorn's workers take connections (issue 15: connections spread over the workers).

gthread workers each listen on a socket of their own (`reuse_port`), so the kernel spreads new
connections over them; with one shared socket, a client that opens its connections at once could
leave one worker with all of them. Sync workers keep the one shared socket (a busy sync worker must
not be handed connections): tests/e2e/test_rate_limits.py and test_metrics_endpoint.py rely on it.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Gunicorn


def _listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (state 0A in /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == local and row.split()[3] == "0A")


def test_each_gthread_worker_listens_on_a_socket_of_its_own(gunicorn: Gunicorn) -> None:
    base, _log = gunicorn(WEB_CONCURRENCY="2", GUNICORN_WORKER_CLASS="gthread", GUNICORN_THREADS="2")
    assert _listening_sockets(int(base.rsplit(":", 1)[1])) == 2


def test_sync_workers_share_one_socket(gunicorn: Gunicorn) -> None:
    base, _log = gunicorn(WEB_CONCURRENCY="2", GUNICORN_WORKER_CLASS="sync")
    assert _listening_sockets(int(base.rsplit(":", 1)[1])) == 1
