"""The `dbless` marker of tests/conftest.py: derived from the fixtures a test uses, and held to at run time.

The PostgreSQL run of scripts/test.sh leaves `dbless` tests out, so a test marked wrongly would lose
its PostgreSQL run unseen. Here pytest runs, in a fresh interpreter, a few probe tests under the
suite's own conftest (imported whole): one that uses no database, one that uses the app, and one that
asks for the database only at run time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PROBES = """
import pytest


def test_pure() -> None:
    assert 1 + 1 == 2


def test_through_the_client(client) -> None:
    assert client.get("/health").status_code in (200, 503)


def test_asks_at_run_time(request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("client")
"""


def _pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on `directory` in a fresh interpreter, on SQLite."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("TEST_DATABASE_URL", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(directory), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, cwd=directory)


def test_only_tests_without_the_database_are_dbless_and_one_that_reaches_it_later_fails(tmp_path: Path) -> None:
    conftest = "from tests.conftest import *  # noqa: F403\nfrom tests.conftest import _fresh_database\n"
    (tmp_path / "conftest.py").write_text(conftest)  # the star leaves out the autouse `_fresh_database`
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\nmarkers =\n    dbless: no database\n")
    (tmp_path / "test_probes.py").write_text(PROBES)

    run = _pytest(tmp_path, "-m", "dbless")
    assert "PASSED test_probes.py::test_pure" in run.stdout, run.stdout
    assert "1 deselected" in run.stdout and "test_through_the_client" not in run.stdout  # uses the app: both runs
    assert "ERROR test_probes.py::test_asks_at_run_time" in run.stdout, run.stdout
    assert "a dbless test asked for the test database at run time" in run.stdout
