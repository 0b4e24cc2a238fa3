"""Fixtures of the end-to-end tests: the service under real gunicorn processes, and Redis.

Both start real processes through the `processes` fixture, so these tests carry the `process` marker.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import Gunicorn, ProcessGroup, free_port, wait_for, wait_until


@pytest.fixture()
def gunicorn(tmp_path: Path, processes: ProcessGroup) -> Gunicorn:
    """Start `scripts/serve.sh` (migrations, then gunicorn) with extra variables; returns its URL and log.

    The log has one access line per request: `<worker pid> <status> <path>`. It returns once every
    worker of `WEB_CONCURRENCY` has booted and `/health` answers.
    """

    def launch(**env: str) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"gunicorn-{port}.log"
        environment = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'limits.db'}",
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "8",
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "1",
            "GUNICORN_CMD_ARGS": "--access-logformat '%(p)s %(s)s %(U)s'",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **env,
        }
        process = processes.spawn(["bash", "scripts/serve.sh"], env=environment, log=log, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", process)
        workers = int(environment["WEB_CONCURRENCY"])
        wait_until(lambda: log.read_text().count("Booting worker") >= workers, 30, what=f"{workers} workers")
        return base, log

    return launch


@pytest.fixture()
def redis_url(tmp_path: Path, processes: ProcessGroup) -> str:
    """A redis-server of this test's own on a free loopback port; fails the test if it does not come up."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: scripts/test.sh installs Debian's redis-server", pytrace=False)
    port = free_port()
    log = tmp_path / "redis.log"
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = processes.spawn([*command, "--dir", str(tmp_path)], env=dict(os.environ), log=log)

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with {process.returncode}:\n{log.read_text()}", pytrace=False)
        try:
            return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, 10, what=f"redis-server on port {port} to answer PING")
    return f"redis://127.0.0.1:{port}"
