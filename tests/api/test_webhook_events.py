"""Webhooks of deployment events: `release.activated`, `release.failed` and `deployment.failed` are queued to
the owner's subscribed webhooks as the change happens and delivered signed, on the in-memory runner with the
reconciler driving the rollouts; an unknown event name is a 400; a webhook registered without `events` (like
every webhook registered before they existed) gets its alerts as before and nothing else."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.reconciler import Reconciler
from deploy_service.settings import Settings
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, Receiver, assert_error, converge, deploy, new_agent, verify

V1 = "deploy-test/http-agent:latest"
V2 = "deploy-test/http-agent:v2"
DEPLOYMENT_EVENTS = ["deployment.failed", "release.activated", "release.failed"]


@pytest.fixture()
def receivers() -> Iterator[Callable[[], Receiver]]:
    made: list[Receiver] = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture()
def api(client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]) -> Api:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True, WEBHOOK_RETRY_BASE_SECONDS=0.01, WEBHOOK_MAX_ATTEMPTS=3)
    _, headers = auth.user()
    return Api(client, headers)


@pytest.fixture()
def reconciler(app: Flask, fake_runner: FakeRunner) -> Iterator[Reconciler]:
    reconciler = Reconciler(app, runner=fake_runner, settings=dataclasses.replace(FAST, tick=0.01))
    yield reconciler
    reconciler.close()


def _bodies(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """What `receiver` got, each checked to be signed with `secret`."""
    for headers, body in receiver.received:
        assert verify(secret, headers, body), "a delivery not signed with the webhook's secret"
    return [json.loads(body) for _, body in receiver.received]


def _of(bodies: list[dict[str, Any]], event: str, deployment_id: str) -> list[dict[str, Any]]:
    return [b["data"] for b in bodies if b["type"] == event and b["data"]["deployment_id"] == deployment_id]


def _crash_image(fake_runner: FakeRunner, image: str) -> None:
    """Every replica started from `image` exits at once (a bad version)."""
    bad = fake_runner.image_id(image)

    def crash(spec: Any) -> None:
        if fake_runner.image_id(spec.image) == bad:
            [found] = [c for c in fake_runner.containers.values() if c.info.name == spec.name]
            fake_runner.crash(found.info.container_id)

    fake_runner.on_start = crash


def test_release_and_deployment_events_reach_the_subscribed_webhooks_of_the_owner_only(
    app: Flask,
    api: Api,
    client: FlaskClient,
    auth: AuthActions,
    fake_runner: FakeRunner,
    reconciler: Reconciler,
    receivers: Callable[[], Receiver],
) -> None:
    subscribed_at, alerts_only_at, strangers_at = receivers(), receivers(), receivers()
    created = api.post("/v1/webhooks", {"url": subscribed_at.url, "events": DEPLOYMENT_EVENTS})
    assert created.status_code == 201, created.get_json()
    subscribed = created.get_json()
    assert subscribed["events"] == DEPLOYMENT_EVENTS
    alerts_only = api.post("/v1/webhooks", {"url": alerts_only_at.url}).get_json()
    assert alerts_only["events"] == ["alert.raised", "alert.resolved"]
    _, stranger = auth.user()
    everything = [*DEPLOYMENT_EVENTS, "alert.raised", "alert.resolved"]
    theirs = client.post("/v1/webhooks", headers=stranger, json={"url": strangers_at.url, "events": everything})
    assert theirs.status_code == 201

    # A deploy: release 1 becomes active.
    fake_runner.images.add(V2)
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(
        reconciler,
        lambda: bool(_of(_bodies(subscribed_at, subscribed["secret"]), "release.activated", deployment["id"])),
    )
    [activated] = _of(_bodies(subscribed_at, subscribed["secret"]), "release.activated", deployment["id"])
    assert activated == {
        "deployment_id": deployment["id"],
        "agent_id": agent["id"],
        "deployment_status": "ready",
        "error": None,
        "release": {"number": 1, "status": "active", "reason": "deploy", "rollback_of": None, "error": None},
    }

    # A crashing update rolls back automatically: release 2 failed, the deployment stays ready on release 1.
    _crash_image(fake_runner, V2)
    assert api.client.patch(f"/v1/agents/{agent['id']}", headers=api.headers, json={"image": V2}).status_code == 200
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 2
    converge(
        reconciler, lambda: bool(_of(_bodies(subscribed_at, subscribed["secret"]), "release.failed", deployment["id"]))
    )
    [rolled_back] = _of(_bodies(subscribed_at, subscribed["secret"]), "release.failed", deployment["id"])
    assert rolled_back["deployment_status"] in ("running", "ready") and rolled_back["error"] is None
    release = rolled_back["release"]
    assert release["number"] == 2 and release["status"] == "failed" and release["reason"] == "restart"
    assert "restart budget" in release["error"]

    # A deploy whose image is missing: the deployment fails, and its pending release 1 with it.
    fake_runner.on_start = None
    broken = new_agent(app, api, image="deploy-test/missing:tag")
    failing = deploy(api, broken["id"])
    converge(  # both sent from the same step, each in its own delivery: either may come first
        reconciler,
        lambda: all(
            _of(_bodies(subscribed_at, subscribed["secret"]), kind, failing["id"])
            for kind in ("deployment.failed", "release.failed")
        ),
    )
    bodies = _bodies(subscribed_at, subscribed["secret"])
    [failed] = _of(bodies, "deployment.failed", failing["id"])
    error = api.deployment(failing["id"])["error"]
    assert failed["deployment_status"] == "failed" and failed["error"] == error and error
    assert failed["agent_id"] == broken["id"]
    assert failed["release"] == {
        "number": 1,
        "status": "failed",
        "reason": "deploy",
        "rollback_of": None,
        "error": error,
    }
    [release_failed] = _of(bodies, "release.failed", failing["id"])
    assert release_failed["release"]["number"] == 1 and release_failed["deployment_status"] == "failed"
    assert all(body["type"] in DEPLOYMENT_EVENTS and body["timestamp"] for body in bodies), "no alert reached it"

    # The delivery log says the same: each delivered once, signed with the one webhook-id per delivery.
    log = api.get(f"/v1/webhooks/{subscribed['id']}/deliveries").get_json()["items"]
    assert sorted((item["event"], item["status"], item["attempts"]) for item in log) == [
        ("deployment.failed", "succeeded", 1),
        ("release.activated", "succeeded", 1),
        ("release.failed", "succeeded", 1),
        ("release.failed", "succeeded", 1),
    ]
    assert {headers["webhook-id"] for headers, _ in subscribed_at.received} == {item["id"] for item in log}

    # The alert-only webhook got alerts, as before, and none of the new events; the stranger's got nothing.
    converge(
        reconciler,
        lambda: any(
            b["data"].get("kind") == "deployment_failed" for b in _bodies(alerts_only_at, alerts_only["secret"])
        ),
    )
    assert {body["type"] for body in _bodies(alerts_only_at, alerts_only["secret"])} <= {
        "alert.raised",
        "alert.resolved",
    }
    assert strangers_at.received == []
    stranger_log = client.get(f"/v1/webhooks/{theirs.get_json()['id']}/deliveries", headers=stranger).get_json()
    assert stranger_log["total"] == 0


def test_an_update_changes_what_a_webhook_gets_from_the_next_event_on(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, receivers: Callable[[], Receiver]
) -> None:
    receiver = receivers()
    hook = api.post("/v1/webhooks", {"url": receiver.url}).get_json()
    changed = api.client.patch(
        f"/v1/webhooks/{hook['id']}", headers=api.headers, json={"events": ["release.activated"]}
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["events"] == ["release.activated"] and "secret" not in changed.get_json()
    read = api.get(f"/v1/webhooks/{hook['id']}").get_json()
    assert read == changed.get_json() and read["url"] == receiver.url
    deployment = deploy(api, new_agent(app, api)["id"])
    converge(reconciler, lambda: bool(receiver.received))
    [body] = _bodies(receiver, hook["secret"])
    assert body["type"] == "release.activated" and body["data"]["deployment_id"] == deployment["id"]


@pytest.mark.parametrize(
    "events", [["release.started"], ["alert.raised", "deployment.ready"], [], "release.failed", [1]], ids=str
)
def test_an_unknown_event_is_a_400_naming_events_and_writes_nothing(
    api: Api, receivers: Callable[[], Receiver], events: Any
) -> None:
    url = receivers().url
    error = assert_error(api.post("/v1/webhooks", {"url": url, "events": events}), 400, "validation_error")
    assert list(error["details"]) == ["events"]
    assert api.get("/v1/webhooks").get_json()["total"] == 0
    hook = api.post("/v1/webhooks", {"url": url, "events": ["release.failed"]}).get_json()
    patched = api.client.patch(f"/v1/webhooks/{hook['id']}", headers=api.headers, json={"events": events})
    assert list(assert_error(patched, 400, "validation_error")["details"]) == ["events"]
    assert api.get(f"/v1/webhooks/{hook['id']}").get_json()["events"] == ["release.failed"]


def test_another_users_webhook_cannot_be_read_or_changed(
    api: Api, client: FlaskClient, auth: AuthActions, receivers: Callable[[], Receiver]
) -> None:
    _, stranger = auth.user()
    theirs = client.post("/v1/webhooks", headers=stranger, json={"url": receivers().url}).get_json()
    assert_error(api.get(f"/v1/webhooks/{theirs['id']}"), 404, "not_found")
    patch = api.client.patch(f"/v1/webhooks/{theirs['id']}", headers=api.headers, json={"events": ["release.failed"]})
    assert_error(patch, 404, "not_found")
    mine = client.get(f"/v1/webhooks/{theirs['id']}", headers=stranger).get_json()
    assert mine["events"] == ["alert.raised", "alert.resolved"]
