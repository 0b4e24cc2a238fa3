"""scripts/bootstrap.sh on a machine where the first try went wrong, as a newcomer meets it.

The script is run from a copy of the repository's layout whose requirements files are empty, so that
what is tested is the script (finding, checking and making the virtualenv), not a download of every
package. Real processes: `python3 -m venv` and pip run for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, ProcessGroup


@pytest.fixture()
def checkout(tmp_path: Path, processes: ProcessGroup) -> Path:
    """A directory laid out like the repository, for bootstrap.sh, with nothing to install."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "bootstrap.sh", tmp_path / "scripts" / "bootstrap.sh")
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "requirements-dev.txt").write_text("")
    # deployctl's package, which bootstrap installs editable (its dependencies are in requirements.txt).
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "deploy_client", tmp_path / "deploy_client", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _bootstrap(checkout: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = f"source {checkout / 'scripts' / 'bootstrap.sh'} && command -v python"
    environment = {key: value for key, value in os.environ.items() if key not in {"VENV", "VIRTUAL_ENV", "PYTHON"}}
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=300, env={**environment, **env}, check=False
    )


def test_a_half_made_venv_is_made_again(checkout: Path) -> None:
    venv = checkout / ".venv"
    made = subprocess.run(["python3", "-m", "venv", "--without-pip", str(venv)], capture_output=True, check=False)
    assert made.returncode == 0, made.stderr  # what an interrupted first try leaves: a Python without pip
    result = _bootstrap(checkout)
    assert result.returncode == 0, result.stderr
    assert "incomplete (no working pip): making it again" in result.stderr
    assert result.stdout.strip() == str(venv / "bin" / "python")
    assert subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], check=False).returncode == 0
    again = _bootstrap(checkout)  # a whole venv is kept as it is
    assert again.returncode == 0 and "making it again" not in again.stderr and "creating" not in again.stderr


def test_a_python_too_old_is_named_with_what_to_do(checkout: Path, tmp_path: Path) -> None:
    old = tmp_path / "python3.9"
    old.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "Python 3.9.2"; exit 0; }\nexit 1\n')
    old.chmod(0o755)
    result = _bootstrap(checkout, PYTHON=str(old))
    assert result.returncode != 0
    assert "Python 3.9.2 is too old: Python 3.11 or newer is needed" in result.stderr
    assert not (checkout / ".venv").exists()


def test_a_failed_install_is_not_trusted_by_the_next_run(checkout: Path) -> None:
    (checkout / "requirements-dev.txt").write_text("no-such-package-deploy-service==0.0.0\n")
    failed = _bootstrap(checkout, PIP_NO_INDEX="1")  # nothing can be installed
    assert failed.returncode != 0
    assert "installing the Python packages failed" in failed.stderr
    assert not (checkout / ".venv" / ".requirements.sha256").exists()
    again = _bootstrap(checkout, PIP_NO_INDEX="1")
    assert again.returncode != 0 and "installing Python packages" in again.stderr  # tried again, not trusted
