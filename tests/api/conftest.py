"""Fixtures of the HTTP tests: a logged-in user's `Api`, and a reconciler on the in-memory runner.

A module that needs another shape (the alert rules' settings, the webhook receiver, the fake swarm)
defines its own fixture of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.reconciler import Reconciler
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api


@pytest.fixture()
def reconciler(app: Flask, fake_runner: FakeRunner) -> Iterator[Reconciler]:
    reconciler = Reconciler(app, runner=fake_runner, settings=FAST)
    yield reconciler
    reconciler.close()


@pytest.fixture()
def api(client: FlaskClient, auth: AuthActions) -> Api:
    _, headers = auth.user()
    return Api(client, headers)
