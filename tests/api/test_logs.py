"""Deployment logs on the in-memory runner: following (time limit, per-user slots, no connection held while
waiting), the stored build log's caps, and replicas whose containers are gone."""

from __future__ import annotations

import contextvars
import json
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.pool import QueuePool

from deploy_service.extensions import db
from deploy_service.models import Deployment
from deploy_service.reconciler import Reconciler
from deploy_service.services import follow_slots
from deploy_service.settings import Settings
from tests.factories import AuthActions, make_deployment
from tests.fakes import FakeRunner
from tests.helpers import Api, Clock, converge, deploy, new_agent


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


class Stream:
    """A followed log stream, opened and read in a context of its own, as a server serves each in its thread.

    The test client runs a streamed body in the test's thread, and `stream_with_context` leaves the
    request's contexts pushed while the body is suspended: two streams open side by side in one context
    would pop each other's. Opening a stream takes its slot (the first `next()` runs in the view).
    """

    def __init__(self, api: Api, deployment_id: str, query: str = "", *, headers: dict[str, str] | None = None) -> None:
        self.context = contextvars.copy_context()
        url = f"/v1/deployments/{deployment_id}/logs?follow=true{query}"
        self.response = self.context.run(api.client.get, url, headers=headers or api.headers, buffered=False)
        self.status_code: int = self.response.status_code

    def text(self) -> str:
        text: str = self.context.run(self.response.get_data, as_text=True)
        return text

    def chunks(self) -> Iterator[bytes]:
        """The body's chunks, one `next()` at a time (the stream is suspended in between)."""
        body = self.response.iter_encoded()
        while True:
            try:
                yield self.context.run(next, body)
            except StopIteration:
                return

    def close(self) -> None:
        """The client goes away."""
        self.context.run(self.response.close)


@pytest.fixture()
def follow(api: Api) -> Iterator[Callable[..., Stream]]:
    """Open `Stream`s; any still open are closed after the test."""
    opened: list[Stream] = []

    def open_stream(deployment_id: str, query: str = "", **kwargs: Any) -> Stream:
        stream = Stream(api, deployment_id, query, **kwargs)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in reversed(opened):
        stream.close()


def _ready_deployment(app: Flask, api: Api, reconciler: Reconciler, **body: Any) -> dict[str, Any]:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], **body)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    return deployment


def test_follow_streams_past_the_per_user_limit_are_refused_until_one_ends(
    app: Flask,
    api: Api,
    auth: AuthActions,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    follow: Callable[..., Stream],
) -> None:
    configure(LOG_FOLLOW_MAX_PER_USER=2, LOG_FOLLOW_MAX_SECONDS=30)
    deployment = _ready_deployment(app, api, reconciler)
    first, second = follow(deployment["id"]), follow(deployment["id"])
    assert first.status_code == second.status_code == 200

    refused = follow(deployment["id"])
    assert refused.status_code == 429
    body = refused.response.get_json()
    assert body["success"] is False and body["error"] == "rate_limited" and "(2 at once)" in body["message"]
    assert 1 <= int(refused.response.headers["Retry-After"]) <= 60
    assert api.get(f"/v1/deployments/{deployment['id']}/logs").status_code == 200  # reading is not following

    other, other_headers = auth.user()
    assert follow("no-such-deployment", headers=other_headers).status_code == 404  # a 404 takes no slot
    with app.app_context():
        theirs = make_deployment(app, other, new_agent(app, Api(api.client, other_headers))["id"])
    converge(reconciler, Api(api.client, other_headers).status_is(theirs["id"], "ready"))
    assert follow(theirs["id"], headers=other_headers).status_code == 200  # slots are counted per user

    first.close()  # the client went away: its slot is free at once
    assert follow(deployment["id"]).status_code == 200
    assert follow(deployment["id"]).status_code == 429


def test_the_limit_is_shared_by_every_worker(
    app: Flask,
    api: Api,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    make_app: Callable[..., Flask],
    follow: Callable[..., Stream],
) -> None:
    """Another app on the same database (another gunicorn worker: its own process, pool and memory)."""
    configure(LOG_FOLLOW_MAX_PER_USER=1)
    deployment = _ready_deployment(app, api, reconciler)
    other_worker = Api(make_app(LOG_FOLLOW_MAX_PER_USER=1, RECONCILER_ENABLED=False).test_client(), api.headers)
    try:
        stream = follow(deployment["id"])
        assert stream.status_code == 200
        refused = Stream(other_worker, deployment["id"])
        assert refused.status_code == 429, "the other worker must count this worker's stream"
        stream.close()
        elsewhere = Stream(other_worker, deployment["id"])
        assert elsewhere.status_code == 200
        assert follow(deployment["id"]).status_code == 429
        elsewhere.close()
    finally:
        with other_worker.client.application.app_context():
            db.engine.dispose()


def test_streams_opened_at_once_never_exceed_the_limit(
    app: Flask, api: Api, reconciler: Reconciler, configure: Callable[..., Settings]
) -> None:
    configure(LOG_FOLLOW_MAX_PER_USER=3, LOG_FOLLOW_MAX_SECONDS=30)
    deployment = _ready_deployment(app, api, reconciler)
    start = threading.Barrier(8)
    streams: list[Stream] = []

    def open_one() -> None:
        start.wait()
        streams.append(Stream(Api(app.test_client(), api.headers), deployment["id"]))

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert sorted(stream.status_code for stream in streams) == [200] * 3 + [429] * 5
    finally:
        for stream in streams:
            stream.close()


def test_streams_that_end_free_their_slot(
    app: Flask,
    api: Api,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    follow: Callable[..., Stream],
) -> None:
    configure(LOG_FOLLOW_MAX_PER_USER=1, LOG_FOLLOW_MAX_SECONDS=0.2, LOG_FOLLOW_POLL_SECONDS=0.01)
    deployment = _ready_deployment(app, api, reconciler)
    for _ in range(3):  # each ends at its time limit, and the next one is let in
        stream = follow(deployment["id"])
        assert stream.status_code == 200, stream.response.get_json()
        with ends_within(10, "the follow stream did not end at its limit"):
            assert server_sent_events(stream.text())[-1][0] == "end"

    configure(LOG_FOLLOW_MAX_SECONDS=30)
    stream = follow(deployment["id"])
    assert stream.status_code == 200
    assert api.post(f"/v1/deployments/{deployment['id']}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "stopped"))
    with ends_within(10, "the follow stream did not end with the deployment"):
        assert server_sent_events(stream.text())[-1] == ("end", {"status": "stopped"})
    assert follow(deployment["id"]).status_code == 200  # the ended stream's slot is free


def test_a_crashed_workers_streams_stop_counting_when_their_lease_lapses(
    app: Flask,
    api: Api,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    follow: Callable[..., Stream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker killed mid-stream never releases its slots: they count until `LOG_FOLLOW_LEASE_SECONDS` pass."""
    configure(LOG_FOLLOW_MAX_PER_USER=1, LOG_FOLLOW_LEASE_SECONDS=20, LOG_FOLLOW_MAX_SECONDS=600)
    clock = Clock()
    monkeypatch.setattr(follow_slots, "utcnow", clock)
    deployment = _ready_deployment(app, api, reconciler)
    assert follow(deployment["id"]).status_code == 200  # never read again: nobody renews or releases it

    clock.advance(19)
    refused = follow(deployment["id"])
    assert refused.status_code == 429
    assert refused.response.headers["Retry-After"] == "1"  # when the lapsing lease frees the slot
    clock.advance(2)
    assert follow(deployment["id"]).status_code == 200


def test_an_open_stream_renews_its_slot(
    app: Flask,
    api: Api,
    fake_runner: FakeRunner,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    follow: Callable[..., Stream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(LOG_FOLLOW_MAX_PER_USER=1, LOG_FOLLOW_LEASE_SECONDS=20, LOG_FOLLOW_POLL_SECONDS=0.01)
    clock = Clock()
    monkeypatch.setattr(follow_slots, "utcnow", clock)
    deployment = _ready_deployment(app, api, reconciler)
    [replica] = fake_runner.of(deployment["id"])
    chunks = follow(deployment["id"]).chunks()
    for n in range(3):  # 45 s on the slots' clock: more than twice the lease
        clock.advance(15)
        fake_runner.say(replica.container_id, f"line {n}")
        with ends_within(10, "the follow stream stopped polling"):
            while f'"line {n}"'.encode() not in next(chunks):
                pass
        assert follow(deployment["id"]).status_code == 429, "the running stream's slot lapsed"


def test_follow_holds_no_database_connection_between_events(
    app: Flask,
    api: Api,
    fake_runner: FakeRunner,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    follow: Callable[..., Stream],
) -> None:
    configure(LOG_FOLLOW_MAX_SECONDS=30, LOG_FOLLOW_POLL_SECONDS=0.01)
    deployment = _ready_deployment(app, api, reconciler)
    [replica] = fake_runner.of(deployment["id"])
    fake_runner.say(replica.container_id, "before")
    with app.app_context():
        pool = db.engine.pool
    assert isinstance(pool, QueuePool)  # SQLite files and PostgreSQL alike
    stream = follow(deployment["id"])
    assert stream.status_code == 200
    chunks = stream.chunks()
    sent: list[bytes] = []
    with ends_within(10, "the follow stream stopped sending"):
        while not sent or b'"after"' not in sent[-1]:
            sent.append(next(chunks))  # the stream is suspended here, as while a client reads slowly
            assert pool.checkedout() == 0, f"a connection is held by the stream after sending {sent[-1]!r}"
            if b'"before"' in sent[-1]:
                fake_runner.say(replica.container_id, "after")
    assert api.get(f"/v1/deployments/{deployment['id']}").status_code == 200  # served while the stream is open
    stream.close()
    assert pool.checkedout() == 0


def test_lines_longer_than_the_line_cap_are_split_in_the_stored_build_log(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    cap = 16 * 1024  # LOG_LINE_MAX_BYTES's default
    long_line = "début " + "é✓x" * 10_000  # 60 KB, multi-byte: a cut at the byte cap falls inside a character
    fake_runner.build_lines = ["Step 1/1 : RUN print-without-newlines", long_line, "done"]
    agent = new_agent(app, api, image=None, source={"git_url": "https://git.example.com/acme/agent.git"})
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))

    body = api.get(f"/v1/deployments/{deployment['id']}/logs?source=build").get_json()
    lines = [line["line"] for line in body["lines"]]
    assert lines[0] == fake_runner.build_lines[0] and lines[-1] == "done"
    pieces = lines[1:-1]
    assert len(pieces) == 4 and "".join(pieces) == long_line  # cut on character boundaries, nothing lost
    assert all(cap - 3 <= len(piece.encode()) <= cap for piece in pieces[:-1])


def test_logs_of_replicas_whose_containers_are_gone_answer_what_is_left(
    app: Flask,
    api: Api,
    fake_runner: FakeRunner,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
    follow: Callable[..., Stream],
) -> None:
    """A container removed behind the service's back (or before the reconciler saw it) is not a 500."""
    configure(LOG_FOLLOW_MAX_SECONDS=0.3, LOG_FOLLOW_POLL_SECONDS=0.01)
    deployment = _ready_deployment(app, api, reconciler, replicas=2)
    first, second = fake_runner.of(deployment["id"])
    fake_runner.say(first.container_id, "from replica 0")
    fake_runner.say(second.container_id, "from replica 1")
    fake_runner.containers.pop(first.container_id)  # removed out of band: its instance still names it
    logs = f"/v1/deployments/{deployment['id']}/logs"

    gone = api.get(f"{logs}?replica=0")
    assert gone.status_code == 200, gone.get_json()
    assert gone.get_json()["lines"] == []
    assert [line["line"] for line in api.get(logs).get_json()["lines"]] == ["from replica 1"]
    assert api.get(f"{logs}?replica=7").get_json()["lines"] == []  # no such replica at all
    with ends_within(10, "the follow stream did not end"):
        events = server_sent_events(follow(deployment["id"]).text())
    assert [data["line"] for name, data in events if name is None] == ["from replica 1"]
    assert events[-1] == ("end", {"status": "ready", "reason": "follow time limit reached"})

    fake_runner.containers.pop(second.container_id)
    everything_gone = api.get(logs)
    assert everything_gone.status_code == 200 and everything_gone.get_json()["lines"] == []
