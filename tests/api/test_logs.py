"""Deployment logs on the in-memory runner: the follow stream's time limit, and the stored build log's cap."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask

from deploy_service.extensions import db
from deploy_service.models import Deployment
from deploy_service.reconciler import Reconciler
from deploy_service.settings import Settings
from tests.fakes import FakeRunner
from tests.helpers import Api, converge, deploy, new_agent


def server_sent_events(text: str) -> list[tuple[str | None, Any]]:
    """(event name or None, decoded data) of each event in a `text/event-stream` body; comments skipped."""
    events: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
        if data is not None:
            events.append((name, data))
    return events


@contextmanager
def ends_within(seconds: float, what: str) -> Iterator[None]:
    """Fail if the block (which may block forever when the behaviour under test broke) runs longer.

    The stream is read in the test's own thread (its request context lives there), so the guard is a
    SIGALRM timer that interrupts it.
    """

    def expired(*_: Any) -> None:
        raise AssertionError(f"{what} after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_follow_ends_with_the_time_limit_event_while_the_deployment_runs(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, configure: Callable[..., Settings]
) -> None:
    configure(LOG_FOLLOW_MAX_SECONDS=0.3, LOG_FOLLOW_POLL_SECONDS=0.01)
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    [replica] = fake_runner.of(deployment["id"])
    fake_runner.say(replica.container_id, "hello")
    response = api.client.get(
        f"/v1/deployments/{deployment['id']}/logs?follow=true", headers=api.headers, buffered=False
    )
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    with ends_within(10, "the follow stream did not end at its 0.3 s limit"):
        events = server_sent_events(response.get_data(as_text=True))
    assert [data["line"] for name, data in events if name is None] == ["hello"]
    assert events[-1] == ("end", {"status": "ready", "reason": "follow time limit reached"})
    assert api.deployment(deployment["id"])["status"] == "ready"  # the stream ended, not the deployment


def test_stored_build_log_keeps_its_newest_whole_lines_within_the_cap(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, configure: Callable[..., Settings]
) -> None:
    cap = 4096
    configure(BUILD_LOG_MAX_BYTES=cap)
    fake_runner.build_lines = [f"output line {n:04d} " + "x" * 40 for n in range(1, 501)]  # ~40 KB with stamps
    agent = new_agent(app, api, image=None, source={"git_url": "https://git.example.com/acme/agent.git"})
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    with app.app_context():
        found = db.session.get(Deployment, deployment["id"])
        assert found is not None and found.build_log is not None
        stored = found.build_log
    assert len(stored.encode()) <= cap
    lines = api.get(f"/v1/deployments/{deployment['id']}/logs?source=build&tail=10000").get_json()["lines"]
    kept = [line["line"] for line in lines]
    assert kept == fake_runner.build_lines[-len(kept) :]  # the newest lines, whole and in order
    assert all(line["timestamp"] for line in lines)  # no line was cut into its stamp
    line_bytes = len(stored.splitlines()[0].encode()) + 1
    assert len(stored.encode()) > cap - 2 * line_bytes  # the cap is used, not emptied
