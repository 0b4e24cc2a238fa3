"""A request whose side effect has happened answers as such, even when the bookkeeping after it fails.

`POST /v1/evaluations` stores the evaluation, then runs the hallucination rule at once; two posts at
the same moment can both find no open alert and both try to open one, and the later one hits the
open-alert unique index. `interact` has the agent's answer before it records the call. Neither
failure afterwards may turn the request into a 500: the evaluation is stored once and answers 201,
and the agent's answer comes back (the failure is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from deploy_service.extensions import db
from deploy_service.models import Alert, AlertKind, Evaluation, Invocation
from deploy_service.reconciler import Reconciler
from deploy_service.services import alerts
from deploy_service.settings import Settings
from tests.api.test_api_keys import deployed, new_key, replicas
from tests.helpers import Api, new_agent

__all__ = ["replicas"]  # the fixture, shared with test_api_keys


def _count(app: Flask, model: Any, *where: Any) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _open_a_rival_alert(app: Flask, deployment_id: str, agent_id: str, owner_id: str) -> None:
    """What a concurrent post committed between this post's look for an open alert and its insert."""
    with app.app_context(), Session(db.engine) as other:
        other.add(
            Alert(
                deployment_id=deployment_id,
                agent_id=agent_id,
                owner_id=owner_id,
                severity="warning",
                kind=AlertKind.HALLUCINATION_RATE_HIGH,
                message="Hallucination rate 100% over the last 1 evaluations.",
                signature={"rate": 1.0, "total": 1},
            )
        )
        other.commit()


def test_an_evaluation_racing_another_to_open_the_alert_is_stored_once_and_answers_201(
    app: Flask,
    api: Api,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(ALERT_MIN_SAMPLES=1, ALERT_HALLUCINATION_RATE=0.5)
    agent = new_agent(app, api)
    deployment = api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()
    real_observe = alerts.observe
    raced: list[str] = []

    def observe_after_a_rival(target: Any, kind: str, finding: Any, *, known: Any = None) -> Any:
        if kind != AlertKind.HALLUCINATION_RATE_HIGH or raced:
            return real_observe(target, kind, finding, known=known)
        raced.append(kind)
        _open_a_rival_alert(app, target.id, target.agent_id, target.owner_id)
        return real_observe(target, kind, finding, known={})  # it looked before the rival committed: none open

    monkeypatch.setattr(alerts, "observe", observe_after_a_rival)
    body = {"agent_id": agent["id"], "prompt": "p", "response": "r", "hallucinated": True}
    response = api.post("/v1/evaluations", body)

    assert raced, "the rule ran and met the rival's alert"
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["prompt"] == "p" and response.get_json()["agent_id"] == agent["id"]
    assert _count(app, Evaluation, Evaluation.agent_id == agent["id"]) == 1
    [alert] = api.get(f"/v1/alerts?deployment_id={deployment['id']}").get_json()["items"]
    assert alert["kind"] == "hallucination_rate_high" and alert["status"] == "active"


def test_an_evaluation_whose_alert_step_fails_is_still_201(
    app: Flask,
    api: Api,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any database failure of the rule after the evaluation is stored: logged; the next sampling round re-runs it."""
    configure(ALERT_MIN_SAMPLES=1, ALERT_HALLUCINATION_RATE=0.5)
    agent = new_agent(app, api)
    api.post(f"/v1/agents/{agent['id']}/deploy", {})

    def broken(*_: Any, **__: Any) -> Any:
        raise OperationalError("UPDATE alerts", {}, Exception("server closed the connection"))

    monkeypatch.setattr(alerts, "observe", broken)
    body = {"agent_id": agent["id"], "prompt": "p", "response": "r", "hallucinated": True}
    with caplog.at_level(logging.WARNING, logger="deploy_service"):
        response = api.post("/v1/evaluations", body)
    assert response.status_code == 201, response.get_json()
    assert _count(app, Evaluation, Evaluation.agent_id == agent["id"]) == 1
    assert any("hallucination" in record.getMessage() for record in caplog.records), caplog.text


def test_an_interact_call_whose_record_fails_to_commit_still_returns_the_answer(
    app: Flask,
    api: Api,
    client: FlaskClient,
    reconciler: Reconciler,
    replicas: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    key = {"X-API-Key": new_key(api, agent_id)["key"]}

    def refuse_invocations(session: Session, *_: Any) -> None:
        if any(isinstance(row, Invocation) for row in session.new):
            raise OperationalError("INSERT INTO invocations", {}, Exception("the database went away"))

    event.listen(Session, "before_flush", refuse_invocations)
    try:
        with caplog.at_level(logging.WARNING, logger="deploy_service"):
            answer = client.post(f"/v1/agents/{agent_id}/interact", headers=key, json={"q": "still there?"})
    finally:
        event.remove(Session, "before_flush", refuse_invocations)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["echo"] == {"q": "still there?"}
    assert _count(app, Invocation, Invocation.agent_id == agent_id) == 0
    assert any("not recorded" in record.getMessage() for record in caplog.records), caplog.text
    # The next call is recorded as usual.
    assert client.post(f"/v1/agents/{agent_id}/interact", headers=key, json={}).status_code == 200
    assert _count(app, Invocation, Invocation.agent_id == agent_id) == 1
