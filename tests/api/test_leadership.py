"""Lost leadership: no new background work starts, and work in flight does not write its result.

Image preparation and webhook sends run on their own threads and can outlive the leadership they were
started under. The in-memory runner and a fake HTTP pool stand in for the engine and the receiver.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentEvent, User, WebhookDelivery
from deploy_service.reconciler import Reconciler, loop
from deploy_service.reconciler.dispatch import Dispatcher
from deploy_service.reconciler.leadership import Leadership
from deploy_service.reconciler.prepare import Preparer
from deploy_service.services import webhooks
from deploy_service.services.webhook_sender import Answer
from tests.factories import AuthActions, UserRef, make_agent
from tests.fakes import FakeRunner
from tests.helpers import FAST


def new_deployment(app: Flask, client: FlaskClient, auth: AuthActions) -> str:
    user, headers = auth.user()
    agent = make_agent(app, user)
    response = client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={})
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def image_state(app: Flask, deployment_id: str) -> tuple[bool, list[str]]:
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        assert deployment is not None
        events = db.session.scalars(
            select(DeploymentEvent.event_type).where(DeploymentEvent.deployment_id == deployment_id)
        ).all()
        return deployment.image_ready, list(events)


def test_a_preparer_that_does_not_lead_starts_nothing(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    deployment_id = new_deployment(app, client, auth)
    leadership = Leadership()
    standby = Preparer(app, fake_runner, wake=lambda: None, leadership=leadership)
    standby.ensure(deployment_id)
    standby.pool.shutdown(wait=True)
    assert "ensure_image" not in fake_runner.calls
    assert image_state(app, deployment_id)[0] is False

    leadership.gain()
    done = threading.Event()
    leader = Preparer(app, fake_runner, wake=done.set, leadership=leadership)
    try:
        leader.ensure(deployment_id)
        assert done.wait(10)
        ready, events = image_state(app, deployment_id)
        assert ready and "image_ready" in events
    finally:
        leader.close()


def test_a_failed_preparation_is_not_tried_again_by_a_pass_planned_before_it_was_written(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    """The failure waits for the planner (which fails the rollout or rolls it back): no second pull or build."""
    deployment_id = new_deployment(app, client, auth)
    fake_runner.images.discard(_image_of(app, deployment_id))  # neither local nor pullable: the pull fails
    done = threading.Event()
    preparer = Preparer(app, fake_runner, wake=done.set, leadership=Leadership(leading=True))
    try:
        preparer.ensure(deployment_id)
        assert done.wait(10)
        done.clear()
        preparer.ensure(deployment_id)  # as a pass that read the deployment before the failure was written
        assert done.wait(10)
    finally:
        preparer.close()
    ready, events = image_state(app, deployment_id)
    assert ready is False and events.count("image_unavailable") == 1
    assert fake_runner.calls.count("ensure_image") == 1


def _image_of(app: Flask, deployment_id: str) -> str:
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        assert deployment is not None
        return str(deployment.image)


@pytest.mark.parametrize("lost", [False, True])
def test_a_preparation_in_flight_when_leadership_is_lost_writes_nothing(
    app: Flask,
    client: FlaskClient,
    auth: AuthActions,
    fake_runner: FakeRunner,
    monkeypatch: pytest.MonkeyPatch,
    lost: bool,
) -> None:
    deployment_id = new_deployment(app, client, auth)
    pulling, release, done = threading.Event(), threading.Event(), threading.Event()
    ensure_image = fake_runner.ensure_image

    def slow_pull(ref: str, **kwargs: Any) -> Any:
        pulling.set()
        assert release.wait(10)
        return ensure_image(ref, **kwargs)

    monkeypatch.setattr(fake_runner, "ensure_image", slow_pull)
    leadership = Leadership(leading=True)
    preparer = Preparer(app, fake_runner, wake=done.set, leadership=leadership)
    try:
        preparer.ensure(deployment_id)
        assert pulling.wait(10)
        if lost:
            leadership.lose()
            leadership.gain()  # leading again, in a new term: the old term's pull still may not write
        release.set()
        assert done.wait(10)
    finally:
        preparer.close()
    ready, events = image_state(app, deployment_id)
    assert ready is not lost
    assert ("image_ready" in events) is not lost


class FakeSender:
    """Stands in for the dispatcher's `WebhookSender`: records each attempt, answers 204 once released."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.sending, self.release = threading.Event(), threading.Event()

    def post(self, url: str, **_: Any) -> Answer:
        self.requests.append(url)
        self.sending.set()
        assert self.release.wait(10)
        return Answer(status=204, body=b"")


def pending_delivery(app: Flask, owner: UserRef) -> str:
    with app.app_context():
        actor = db.session.get(User, owner.id)
        hook, _ = webhooks.create_webhook(actor, url="http://127.0.0.1:9/hook", severities=None, kinds=None)
        delivery = WebhookDelivery(webhook_id=hook.id, event="alert.raised", payload={"type": "alert.raised"})
        db.session.add(delivery)
        db.session.commit()
        return delivery.id


def delivery_state(app: Flask, delivery_id: str) -> tuple[str, int]:
    with app.app_context():
        delivery = db.session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        return delivery.status, delivery.attempts


@pytest.fixture()
def private_targets(configure: Any) -> None:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)


@pytest.mark.usefixtures("private_targets")
def test_a_dispatcher_that_does_not_lead_sends_nothing(app: Flask, auth: AuthActions) -> None:
    delivery_id = pending_delivery(app, auth.user()[0])
    dispatcher = Dispatcher(app, leadership=Leadership())
    dispatcher.sender = http = FakeSender()
    http.release.set()
    with app.app_context():
        assert dispatcher.dispatch_due() is None
    dispatcher.pool.shutdown(wait=True)
    assert http.requests == []
    assert delivery_state(app, delivery_id) == ("pending", 0)


@pytest.mark.usefixtures("private_targets")
@pytest.mark.parametrize("lost", [False, True])
def test_a_send_in_flight_when_leadership_is_lost_records_nothing(app: Flask, auth: AuthActions, lost: bool) -> None:
    delivery_id = pending_delivery(app, auth.user()[0])
    leadership = Leadership(leading=True)
    dispatcher = Dispatcher(app, leadership=leadership)
    dispatcher.sender = http = FakeSender()
    with app.app_context():
        dispatcher.dispatch_due()
    assert http.sending.wait(10)
    if lost:
        leadership.lose()
        leadership.gain()
    http.release.set()
    dispatcher.pool.shutdown(wait=True)
    assert http.requests == ["http://127.0.0.1:9/hook"]
    assert delivery_state(app, delivery_id) == (("pending", 0) if lost else ("succeeded", 1))


def test_the_reconciler_warns_of_a_range_in_the_ephemeral_ports_once_it_leads(
    app: Flask, fake_runner: FakeRunner, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "ephemeral_overlap", lambda port_range: (32768, 32999))
    reconciler = Reconciler(app, runner=fake_runner, settings=replace(FAST, port_range=(32000, 32999)))
    try:
        with caplog.at_level(logging.WARNING, logger="deploy_service.reconciler.loop"):
            assert reconciler._lead({}) is None
    finally:
        reconciler.lock.release()  # held by `_lead`: the next test's reconciler must be able to lead
        reconciler.close()
    assert "ports 32768-32999 of HOST_PORT_RANGE are also the kernel's ephemeral ports" in caplog.text
