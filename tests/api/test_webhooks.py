"""Webhooks: registration and URL checks, signed deliveries to a loopback receiver, retries.

The retry schedule runs the dispatcher against a fake sender (nothing leaves the process), on a
frozen clock put in place of the webhook modules' `utcnow`. What the real sender refuses (private
targets, DNS rebinding, redirects, trickled and endless answers) is tests/security/test_webhook_targets.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.extensions import db
from deploy_service.models import WebhookDelivery
from deploy_service.reconciler import Reconciler, dispatch
from deploy_service.reconciler.dispatch import Dispatcher
from deploy_service.services import webhooks
from deploy_service.services.webhook_sender import Answer
from deploy_service.settings import Settings
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, Clock, Receiver, assert_error, converge, new_agent, verify, wait_until


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture()
def api(
    client: FlaskClient,
    auth: AuthActions,
    configure: Callable[..., Settings],
) -> Api:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True, WEBHOOK_RETRY_BASE_SECONDS=0.01, WEBHOOK_MAX_ATTEMPTS=3)
    _, headers = auth.user()
    return Api(client, headers)


@pytest.fixture()
def reconciler(app: Flask, fake_runner: FakeRunner) -> Iterator[Reconciler]:
    reconciler = Reconciler(app, runner=fake_runner, settings=dataclasses.replace(FAST, tick=0.01))
    yield reconciler
    reconciler.close()


def failing_deployment(app: Flask, api: Api) -> str:
    agent = new_agent(app, api, image="deploy-test/missing:tag")
    return str(api.post(f"/v1/agents/{agent['id']}/deploy", {}).get_json()["id"])


def test_register_list_delete_and_url_checks(api: Api, configure: Callable[..., Settings]) -> None:
    created = api.post("/v1/webhooks", {"url": "http://127.0.0.1:9/x", "severities": ["critical"]})
    assert created.status_code == 201
    body = created.get_json()
    assert body["secret"].startswith("whsec_") and body["severities"] == ["critical"]
    listing = api.get("/v1/webhooks")
    assert listing.get_json()["total"] == 1 and body["secret"] not in listing.get_data(as_text=True)
    assert api.delete(f"/v1/webhooks/{body['id']}").status_code == 204
    assert_error(api.delete(f"/v1/webhooks/{body['id']}"), 404, "not_found")
    for url in ("ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/", "not a url"):
        assert_error(api.post("/v1/webhooks", {"url": url}), 400, "validation_error")
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
    for url in ("http://127.0.0.1:8080/x", "http://localhost/x", "http://10.0.0.1/x", "http://[::1]/x"):
        error = assert_error(api.post("/v1/webhooks", {"url": url}), 400, "validation_error")
        assert "url" in error["details"]


BAD_URLS = [
    "https://example.com:99999/x",
    "https://example.com:65536/x",
    "https://example.com:0/x",
    "https://example.com:abc/x",
    "https://example.com:-1/x",
    "https://example.com:+443/x",
    "http://[::1/x",
    "http://[not-an-address]/x",
    "http://" + "a" * 64 + ".example.com/x",
    "http://" + "a." * 127 + "com/x",
    "http://\udcff.example.com/x",
    "http://b\u00fccher.example/x",
    "http://exa mple.com/x",
    "http://example.com/x\r\nX-Injected: 1",
    "http://ex%41mple.com/x",
    "http://example.com\\@evil.example/x",
    "http://-bad.example.com/x",
]


@pytest.mark.parametrize("allow_private", [False, True], ids=["public-only", "private-allowed"])
@pytest.mark.parametrize("url", BAD_URLS)
def test_a_url_the_service_could_not_call_is_a_400_never_a_500(
    api: Api, configure: Callable[..., Settings], url: str, allow_private: bool
) -> None:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=allow_private)
    error = assert_error(api.post("/v1/webhooks", {"url": url}), 400, "validation_error")
    assert list(error["details"]) == ["url"]
    assert api.get("/v1/webhooks").get_json()["total"] == 0


def test_signed_delivery_of_raised_and_resolved_alerts(
    app: Flask, api: Api, receiver: Receiver, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    hook = api.post("/v1/webhooks", {"url": receiver.url}).get_json()
    deployment_id = failing_deployment(app, api)
    converge(reconciler, lambda: bool(receiver.received))
    headers, body = receiver.received[0]
    assert verify(hook["secret"], headers, body)
    assert not verify(hook["secret"], headers, body + b" ")
    event = json.loads(body)
    assert event["type"] == "alert.raised"
    assert event["data"]["kind"] == "deployment_failed" and event["data"]["deployment_id"] == deployment_id
    api.delete(f"/v1/deployments/{deployment_id}")
    converge(reconciler, lambda: len(receiver.received) >= 2)
    assert json.loads(receiver.received[1][1])["type"] == "alert.resolved"
    log = api.get(f"/v1/webhooks/{hook['id']}/deliveries").get_json()["items"]
    assert {(item["event"], item["status"], item["attempts"]) for item in log} == {
        ("alert.raised", "succeeded", 1),
        ("alert.resolved", "succeeded", 1),
    }


def test_failing_receiver_sees_retries_then_the_delivery_fails(
    app: Flask, api: Api, receiver: Receiver, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    receiver.status = 500
    hook = api.post("/v1/webhooks", {"url": receiver.url, "kinds": ["deployment_failed"]}).get_json()
    failing_deployment(app, api)

    def given_up() -> bool:
        items = api.get(f"/v1/webhooks/{hook['id']}/deliveries").get_json()["items"]
        return bool(items) and items[0]["status"] == "failed"

    converge(reconciler, given_up)
    [delivery] = api.get(f"/v1/webhooks/{hook['id']}/deliveries").get_json()["items"]
    assert delivery["attempts"] == 3 and delivery["response_status"] == 500 and delivery["error"] == "HTTP 500"
    assert len(receiver.received) == 3
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert ids == {delivery["id"]}  # the same message, retried


def test_filters_and_owner_scoping(
    app: Flask,
    api: Api,
    client: FlaskClient,
    auth: AuthActions,
    receiver: Receiver,
    fake_runner: FakeRunner,
    reconciler: Reconciler,
) -> None:
    warning_only = api.post("/v1/webhooks", {"url": receiver.url, "severities": ["warning"]}).get_json()
    _, stranger = auth.user()
    theirs = client.post("/v1/webhooks", headers=stranger, json={"url": receiver.url}).get_json()
    failing_deployment(app, api)
    converge(reconciler, lambda: bool(api.get("/v1/deployments/alerts").get_json()["items"]))
    reconciler.run_once()
    assert api.get(f"/v1/webhooks/{warning_only['id']}/deliveries").get_json()["total"] == 0
    assert client.get(f"/v1/webhooks/{theirs['id']}/deliveries", headers=stranger).get_json()["total"] == 0
    assert_error(api.get(f"/v1/webhooks/{theirs['id']}/deliveries"), 404, "not_found")
    assert receiver.received == []


class AnsweringSender:
    """Stands in for the dispatcher's `WebhookSender`: records each attempt's URL and answers `status`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[str] = []

    def post(self, url: str, **_: Any) -> Answer:
        self.requests.append(url)
        return Answer(status=self.status, body=b"")


def queue_delivery(app: Flask, webhook_id: str, due: datetime) -> str:
    """A pending delivery to `webhook_id`, due at `due` (as `enqueue` queues one)."""
    with app.app_context():
        delivery = WebhookDelivery(
            webhook_id=webhook_id, event="alert.raised", payload={"type": "alert.raised"}, next_attempt_at=due
        )
        db.session.add(delivery)
        db.session.commit()
        return delivery.id


def delivery_of(api: Api, webhook_id: str, delivery_id: str) -> dict[str, Any]:
    items = api.get(f"/v1/webhooks/{webhook_id}/deliveries").get_json()["items"]
    [found] = [item for item in items if item["id"] == delivery_id]
    return dict(found)


def test_retries_wait_doubling_delays_then_the_delivery_gives_up(
    app: Flask, api: Api, configure: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(WEBHOOK_RETRY_BASE_SECONDS=10.0, WEBHOOK_MAX_ATTEMPTS=4)
    clock = Clock()
    monkeypatch.setattr(webhooks, "utcnow", clock)
    monkeypatch.setattr(dispatch, "utcnow", clock)
    hook = api.post("/v1/webhooks", {"url": "http://127.0.0.1:9/hook"}).get_json()
    delivery_id = queue_delivery(app, hook["id"], clock())
    dispatcher = Dispatcher(app)
    dispatcher.sender = http = AnsweringSender(503)
    try:
        for attempt, delay in enumerate((10.0, 20.0, 40.0), start=1):
            sent_at = clock()
            with app.app_context():
                assert webhooks.due_deliveries() == [delivery_id]
                dispatcher.dispatch_due()
            wait_until(lambda n=attempt: delivery_of(api, hook["id"], delivery_id)["attempts"] == n, 10)
            found = delivery_of(api, hook["id"], delivery_id)
            assert (found["status"], found["response_status"], found["error"]) == ("pending", 503, "HTTP 503")
            assert datetime.fromisoformat(found["next_attempt_at"]) == sent_at + timedelta(seconds=delay)
            with app.app_context():
                assert dispatcher.dispatch_due() == delay  # the loop is told to wake when the retry is due
                clock.advance(delay - 0.001)
                assert webhooks.due_deliveries() == []  # not a moment early
            assert len(http.requests) == attempt
            clock.advance(0.001)
        with app.app_context():
            dispatcher.dispatch_due()
        wait_until(lambda: delivery_of(api, hook["id"], delivery_id)["status"] == "failed", 10)
        found = delivery_of(api, hook["id"], delivery_id)
        assert (found["attempts"], found["next_attempt_at"], found["error"]) == (4, None, "HTTP 503")
        clock.advance(10**6)
        with app.app_context():
            assert webhooks.due_deliveries() == []
            assert dispatcher.dispatch_due() is None
    finally:
        dispatcher.pool.shutdown(wait=True)
        dispatcher.close()
    assert http.requests == ["http://127.0.0.1:9/hook"] * 4
