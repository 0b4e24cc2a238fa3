"""The runner's `EngineUnavailable` reaches a client as the contract's 503, with the runner's own message."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import Deployment
from tests.factories import AuthActions, make_agent
from tests.fakes import FakeRunner


def test_an_engine_outage_is_a_503_with_the_runners_message(
    app: Flask, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    user, headers = auth.user()
    agent = make_agent(app, user)
    fake_runner.down = True

    response = app.test_client().post("/v1/deployments", headers=headers, json={"agent_id": agent["id"]})

    assert response.status_code == 503
    assert response.get_json() == {"success": False, "error": "engine_unavailable", "message": "fake engine is down"}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Deployment)) == 0
