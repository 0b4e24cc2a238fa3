"""Streamed `interact` (`Accept: text/event-stream`) through the test client, unbuffered (`buffered=False`).

The agents are real HTTP servers on loopback (test_api_keys's `replicas`), writing server-sent events
with pauses; the response body is read piece by piece as the client would. That the pieces also cross
a real server (gunicorn) as they come is tests/integration/test_interact_engine.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import Invocation
from deploy_service.reconciler import Reconciler
from deploy_service.services.interact_stream import SLOTS
from deploy_service.settings import Settings
from tests.api.test_api_keys import STREAM_BROKEN, STREAM_GATE, deployed, replicas
from tests.fakes import FakeRunner
from tests.helpers import Api, assert_error, wait_until

__all__ = ["replicas"]  # a fixture, used by name

STREAM = {"Accept": "text/event-stream"}


def stream(api: Api, agent_id: str, body: dict[str, Any], **headers: str) -> Any:
    return api.client.post(
        f"/v1/agents/{agent_id}/interact", headers={**api.headers, **STREAM, **headers}, json=body, buffered=False
    )


def records(app: Flask) -> list[Invocation]:
    with app.app_context():
        rows = list(db.session.scalars(select(Invocation).order_by(Invocation.id)).all())
        db.session.expunge_all()
        return rows


def test_events_come_back_one_by_one_as_the_agent_writes_them(
    app: Flask, api: Api, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    for chunked in (False, True):
        setup = deployed(app, api, reconciler, replicas=1)
        agent_id = setup["agent"]["id"]
        STREAM_GATE.clear()
        with app.app_context():
            pool = db.engine.pool
        held_before = pool.checkedout()  # type: ignore[attr-defined]
        response = stream(api, agent_id, {"mode": "stream", "events": 3, "gate": True, "chunked": chunked})
        assert response.status_code == 200 and response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        pieces = iter(response.response)
        assert next(pieces) == b"data: 0\n\n", "the first event, while the agent waits to write the second"
        assert not STREAM_GATE.is_set()
        assert pool.checkedout() == held_before, "no database connection held while streaming"  # type: ignore[attr-defined]
        STREAM_GATE.set()
        assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\n"
        response.close()
        [row] = [row for row in records(app) if row.agent_id == agent_id]
        assert row.streamed and row.status_code == 200 and row.error is None
        assert row.response_bytes == 3 * len(b"data: 0\n\n")
        assert row.first_byte_ms is not None and row.first_byte_ms < row.latency_ms
    assert SLOTS.open == 0


def test_a_json_answer_to_a_streaming_request_comes_back_as_json_and_counts(
    app: Flask, api: Api, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    response = stream(api, agent_id, {"q": 1}, **{"X-Session-Id": "s-1"})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json()["echo"] == {"q": 1}
    [row] = records(app)
    assert row.streamed and row.session_id == "s-1" and row.status_code == 200
    assert SLOTS.open == 0


def test_a_stream_ends_at_its_time_limit_and_when_the_agent_falls_silent(
    app: Flask,
    api: Api,
    fake_runner: FakeRunner,
    replicas: Any,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    configure(INTERACT_STREAM_MAX_SECONDS=0.6)
    started = time.monotonic()
    cut = stream(api, agent_id, {"mode": "stream", "events": 40, "pause": 0.1})
    body = b"".join(cut.response)
    cut.close()
    assert time.monotonic() - started < 3
    assert body.startswith(b"data: 0\n\ndata: 1\n\n") and b"data: 39" not in body
    configure(INTERACT_STREAM_MAX_SECONDS=600, INTERACT_TIMEOUT_SECONDS=0.3)
    silent = stream(api, agent_id, {"mode": "stream", "events": 2, "pause": 3})
    assert b"".join(silent.response) == b"data: 0\n\n"
    silent.close()
    limited, timed_out = records(app)
    assert limited.status_code == 200 and limited.error.startswith("stream_time_limit")
    assert timed_out.status_code == 504 and timed_out.error.startswith("agent_timeout")
    assert not timed_out.ok and limited.ok
    assert SLOTS.open == 0


def test_a_client_that_goes_away_closes_the_agents_connection(
    app: Flask, api: Api, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    response = stream(api, agent_id, {"mode": "stream", "events": 100, "pause": 0.05})
    pieces = iter(response.response)
    assert next(pieces) == b"data: 0\n\n"
    response.close()  # what the WSGI server does when the client disconnects
    wait_until(STREAM_BROKEN.is_set, timeout=10, what="the agent's write to fail")
    [row] = records(app)
    assert row.streamed and row.error.startswith("client_closed") and row.status_code == 200
    assert SLOTS.open == 0


def test_a_worker_relays_at_most_its_streams_and_then_says_503(
    app: Flask,
    api: Api,
    fake_runner: FakeRunner,
    replicas: Any,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
) -> None:
    configure(INTERACT_STREAMS_PER_WORKER=1)
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    first = stream(api, agent_id, {"mode": "stream", "events": 2, "gate": True})
    assert next(iter(first.response)) == b"data: 0\n\n"
    busy = stream(api, agent_id, {"mode": "stream"})
    assert_error(busy, 503, "streams_busy")
    assert busy.headers["Retry-After"] == "1" and busy.get_json()["details"] == {"limit": 1}
    assert api.post(f"/v1/agents/{agent_id}/interact", {"q": "json"}).status_code == 200, "JSON calls go on"
    STREAM_GATE.set()
    first.close()
    again = stream(api, agent_id, {"mode": "stream", "events": 1})
    assert b"".join(again.response) == b"data: 0\n\n"
    again.close()
    assert SLOTS.open == 0
    assert len(records(app)) == 3, "the refused stream reached no replica and is not a call"
