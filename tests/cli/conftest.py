"""Fixtures of deployctl's tests: the command line against the real Flask app, in-process.

`deployctl` runs through Typer's test runner with an httpx `WSGITransport` onto the shared test app, a config
folder of the test's own (`XDG_CONFIG_HOME`), and, for `--wait`, a sleep that runs a reconciler pass on the
in-memory runner instead of waiting: the CLI polls exactly as it does against a server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from flask import Flask
from typer.testing import CliRunner

from deploy_client.cli import Runtime
from deploy_client.cli import app as deployctl
from deploy_service.reconciler import Reconciler
from tests.factories import UserRef, make_user

URL = "http://deploy.test"


@dataclass
class Cli:
    """Runs deployctl; `env` is its whole environment (the config folder, the URL...)."""

    runtime: Runtime
    env: dict[str, str]
    config: Path

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        self.runtime.environ = {**self.env, **env}
        return CliRunner().invoke(deployctl, list(args), input=input, obj=self.runtime, env={"COLUMNS": "200"})

    def ok(self, *args: str, input: str | None = None, **env: str) -> Result:
        result = self(*args, input=input, **env)
        assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
        return result

    def json(self, *args: str, **env: str) -> Any:
        """Run with `-o json` and parse stdout (which holds nothing else)."""
        return json.loads(self.ok(*args, "-o", "json", **env).stdout)

    def login(self, user: UserRef) -> None:
        self.ok("login", "--email", user.email, DEPLOYCTL_PASSWORD=user.password)


@pytest.fixture()
def cli(app: Flask, tmp_path: Path) -> Iterator[Cli]:
    config = tmp_path / "config"
    runtime = Runtime(transport=httpx.WSGITransport(app=app), sleep=lambda _: None, poll_interval=0.0)
    yield Cli(runtime, {"XDG_CONFIG_HOME": str(config), "DEPLOYCTL_URL": URL}, config)


@pytest.fixture()
def user(app: Flask) -> UserRef:
    return make_user(app)


@pytest.fixture()
def logged_in(cli: Cli, user: UserRef) -> Cli:
    cli.login(user)
    return cli


@pytest.fixture()
def converging(logged_in: Cli, reconciler: Reconciler) -> Callable[[], None]:
    """`--wait` polls run a reconciler pass on the in-memory runner between polls."""
    logged_in.runtime.sleep = lambda _: reconciler.run_once()
    return lambda: None
