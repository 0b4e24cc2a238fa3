"""API keys and `interact`, with replicas played by real HTTP servers on loopback.

The in-memory runner "starts" a replica by starting a small HTTP server on the port the reconciler
gave it, so interact's forwarding, round-robin, timeouts and failures are real network behaviour.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from deploy_service.extensions import db
from deploy_service.models import ApiKey, Invocation
from deploy_service.models.types import utcnow
from deploy_service.reconciler import Reconciler
from deploy_service.runner.base import ReplicaSpec
from deploy_service.security import api_key_well_formed, generate_api_key
from deploy_service.services import api_keys
from deploy_service.settings import Settings
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import Api, Clock, assert_error, converge, new_agent

RECEIVED: list[tuple[int, Any]] = []
"""(replica index, request body) of every call a replica received, in order; emptied by `replicas`."""


STREAM_GATE = threading.Event()
"""Mode "stream" with `gate`: the agent writes its first event, then waits for this before the others."""
STREAM_BROKEN = threading.Event()
"""Set when a streaming agent's write failed: its caller (the service) closed the connection."""


class AgentHandler(BaseHTTPRequestHandler):
    replica = 0
    # Set by a test: what the agent reports about the service while it answers (mode "probe").
    probe: Any = None

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = json.loads(body or b"{}")
        RECEIVED.append((self.replica, request))
        mode = request.get("mode")
        if mode == "drop":  # read the request, then hang up without an answer
            self.close_connection = True
            return
        if mode == "stream":
            self._stream(request)
            return
        if mode == "slow":
            time.sleep(float(request.get("seconds", 2)))
        if mode == "probe":
            self._send(200, json.dumps({"probed": type(self).probe()}).encode())
        elif mode == "text":
            self._send(200, b"plain words", "text/plain")
        elif mode == "error":
            self._send(500, json.dumps({"error": "agent broke"}).encode())
        else:
            answer = {"replica": self.replica, "echo": request, "length": self.headers.get("Content-Length")}
            self._send(200, json.dumps(answer).encode())

    def _stream(self, request: dict[str, Any]) -> None:
        """Server-sent events `data: <n>` for n in range(events), `pause` seconds apart, chunked or not."""
        chunked = bool(request.get("chunked"))
        if chunked:
            self.protocol_version = "HTTP/1.1"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for n in range(int(request.get("events", 3))):
                if n == 1 and request.get("gate"):
                    STREAM_GATE.wait(10)
                elif n:
                    time.sleep(float(request.get("pause", 0)))
                event = f"data: {n}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event) if chunked else event)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            STREAM_BROKEN.set()
        self.close_connection = True

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def replicas(fake_runner: FakeRunner) -> Iterator[list[ThreadingHTTPServer]]:
    servers: list[ThreadingHTTPServer] = []

    def serve(spec: ReplicaSpec) -> None:
        handler = type("Handler", (AgentHandler,), {"replica": spec.index})
        server = ThreadingHTTPServer(("127.0.0.1", spec.port), handler)
        server.replica_index = spec.index  # type: ignore[attr-defined]
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

    fake_runner.on_start = serve
    RECEIVED.clear()
    STREAM_GATE.clear()
    STREAM_BROKEN.clear()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def new_key(api: Api, agent_id: str, **body: Any) -> dict[str, Any]:
    response = api.post(f"/v1/agents/{agent_id}/api-key", body)
    assert response.status_code == 201, response.get_json()
    created: dict[str, Any] = response.get_json()
    return created


def with_key(client: FlaskClient, key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def deployed(app: Flask, api: Api, reconciler: Reconciler, replicas: int = 2) -> dict[str, Any]:
    agent = new_agent(app, api)
    deployment = api.post(f"/v1/agents/{agent['id']}/deploy", {"replicas": replicas}).get_json()
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    return {"agent": agent, "deployment": deployment}


def test_key_format_and_checksum() -> None:
    key = generate_api_key()
    assert key.startswith("dsk_") and len(key) == 40
    assert api_key_well_formed(key)
    typo = key[:10] + ("A" if key[10] != "A" else "B") + key[11:]
    assert not api_key_well_formed(typo)
    assert not api_key_well_formed(key + "x")
    assert not api_key_well_formed("dsk_" + "0" * 36)
    assert len({generate_api_key() for _ in range(1000)}) == 1000


def test_create_list_and_revoke(app: Flask, api: Api, client: FlaskClient) -> None:
    agent = new_agent(app, api)
    created = new_key(api, agent["id"], name="ci", scopes=["invoke"], expires_in_days=30)
    assert set(created) == {"id", "name", "key", "prefix", "scopes", "created_at", "expires_at"}
    assert created["key"].startswith(created["prefix"]) and created["scopes"] == ["invoke"]
    assert created["expires_at"] > created["created_at"]
    listing = api.get(f"/v1/agents/{agent['id']}/api-keys")
    assert listing.get_json()["total"] == 1
    assert created["key"] not in listing.get_data(as_text=True)
    [item] = listing.get_json()["items"]
    assert item["revoked_at"] is None and item["last_used_at"] is None
    revoked = api.delete(f"/v1/agents/{agent['id']}/api-keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert api.delete(f"/v1/agents/{agent['id']}/api-keys/{created['id']}").status_code == 200
    assert_error(api.delete(f"/v1/agents/{agent['id']}/api-keys/nope"), 404, "not_found")
    assert_error(api.post(f"/v1/agents/{agent['id']}/api-key", {"scopes": ["root"]}), 400, "validation_error")
    assert_error(api.post(f"/v1/agents/{agent['id']}/api-key", {"expires_in_days": 0}), 400, "validation_error")


def test_keys_are_stored_only_as_a_hash(app: Flask, api: Api) -> None:
    agent = new_agent(app, api)
    key = new_key(api, agent["id"])["key"]
    with app.app_context():
        row = db.session.scalars(select(ApiKey)).one()
        stored = " ".join(str(value) for value in row.__dict__.values())
    assert key not in stored and key[len(row.prefix) :] not in stored
    assert len(row.key_hash) == 64


def test_other_users_cannot_manage_my_keys(app: Flask, api: Api, client: FlaskClient, auth: AuthActions) -> None:
    agent = new_agent(app, api)
    key = new_key(api, agent["id"])
    _, other = auth.user()
    assert_error(client.post(f"/v1/agents/{agent['id']}/api-key", headers=other, json={}), 404, "not_found")
    assert_error(client.get(f"/v1/agents/{agent['id']}/api-keys", headers=other), 404, "not_found")
    assert_error(client.delete(f"/v1/agents/{agent['id']}/api-keys/{key['id']}", headers=other), 404, "not_found")


def test_malformed_key_is_refused_without_a_query(app: Flask, api: Api, client: FlaskClient) -> None:
    agent = new_agent(app, api)
    key = new_key(api, agent["id"])["key"]
    typo = key[:-1] + ("0" if key[-1] != "0" else "1")
    statements: list[str] = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for bad in (typo, "nonsense", "dsk_" + "a" * 36):
            assert_error(
                client.post(f"/v1/agents/{agent['id']}/interact", headers=with_key(client, bad), json={}),
                401,
                "unauthorized",
            )
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements == []


def test_interact_round_robin_by_key_and_by_owner(
    app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=2)
    agent_id = setup["agent"]["id"]
    key = new_key(api, agent_id)["key"]
    answers = [
        client.post(f"/v1/agents/{agent_id}/interact", headers=with_key(client, key), json={"q": n}).get_json()
        for n in range(4)
    ]
    assert all("replica" in answer for answer in answers), answers
    replicas_seen = [answer["replica"] for answer in answers]
    assert replicas_seen in ([0, 1, 0, 1], [1, 0, 1, 0])
    assert answers[2]["echo"] == {"q": 2}
    assert answers[0]["length"] == str(len(json.dumps({"q": 0})))
    by_owner = api.post(f"/v1/agents/{agent_id}/interact", {"hello": "world"})
    assert by_owner.status_code == 200 and by_owner.get_json()["echo"] == {"hello": "world"}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Invocation).where(Invocation.ok)) == 5
    listed = api.get(f"/v1/agents/{agent_id}/api-keys").get_json()["items"][0]
    assert listed["last_used_at"] is not None


def test_last_used_at_is_written_at_most_once_per_resolution(
    app: Flask, api: Api, client: FlaskClient, configure: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(API_KEY_LAST_USED_RESOLUTION_SECONDS=60.0)
    clock = Clock()
    monkeypatch.setattr(api_keys, "utcnow", clock)
    agent = new_agent(app, api)
    key = new_key(api, agent["id"])["key"]

    def use_key() -> datetime:
        """A call with the key (accepted: no replica answers yet), then the key's `last_used_at`."""
        answer = client.post(f"/v1/agents/{agent['id']}/interact", headers=with_key(client, key), json={})
        assert_error(answer, 503, "no_ready_replica")
        [listed] = api.get(f"/v1/agents/{agent['id']}/api-keys").get_json()["items"]
        return datetime.fromisoformat(listed["last_used_at"])

    first = clock()
    assert use_key() == first
    clock.advance(59.999)
    assert use_key() == first  # within the resolution: not written again
    assert use_key() == first
    clock.advance(0.001)
    assert use_key() == first + timedelta(seconds=60)  # one resolution later: written
    clock.advance(1)
    assert use_key() == first + timedelta(seconds=60)


def test_no_database_connection_is_held_while_the_agent_answers(
    app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    key = new_key(api, agent_id)["key"]
    with app.app_context():
        pool = db.engine.pool
    AgentHandler.probe = pool.checkedout  # type: ignore[attr-defined]
    try:
        before = pool.checkedout()  # type: ignore[attr-defined]
        by_key = client.post(f"/v1/agents/{agent_id}/interact", headers=with_key(client, key), json={"mode": "probe"})
        by_owner = api.post(f"/v1/agents/{agent_id}/interact", {"mode": "probe"})
    finally:
        AgentHandler.probe = None
    assert by_key.get_json() == {"probed": before} and by_owner.get_json() == {"probed": before}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Invocation).where(Invocation.ok)) == 2


def test_interact_failures(
    app: Flask,
    api: Api,
    client: FlaskClient,
    fake_runner: FakeRunner,
    replicas: Any,
    reconciler: Reconciler,
    configure: Callable[..., Settings],
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id, deployment_id = setup["agent"]["id"], setup["deployment"]["id"]
    url = f"/v1/agents/{agent_id}/interact"
    error = api.post(url, {"mode": "error"})
    assert error.status_code == 500 and error.get_json() == {"error": "agent broke"}
    assert_error(api.post(url, {"mode": "text"}), 502, "bad_gateway")
    configure(INTERACT_TIMEOUT_SECONDS=0.3)
    assert_error(api.post(url, {"mode": "slow", "seconds": 2}), 504, "agent_timeout")
    bad_json = api.client.post(url, headers=api.headers, data="{nope", content_type="application/json")
    assert_error(bad_json, 400, "validation_error")
    with app.app_context():
        codes = sorted(db.session.scalars(select(Invocation.status_code)).all())
    assert codes == [500, 502, 504]
    for server in replicas:
        server.shutdown()
        server.server_close()
    assert_error(api.post(url, {}), 502, "bad_gateway")
    api.post(f"/v1/deployments/{deployment_id}/stop")
    converge(reconciler, api.status_is(deployment_id, "stopped"))
    assert_error(api.post(url, {}), 503, "no_ready_replica")
    never = new_agent(app, api)
    assert_error(api.post(f"/v1/agents/{never['id']}/interact", {}), 503, "no_ready_replica")


def test_revoked_and_expired_keys_fail_at_once_everywhere(
    app: Flask,
    make_app: Any,
    api: Api,
    client: FlaskClient,
    fake_runner: FakeRunner,
    replicas: Any,
    reconciler: Reconciler,
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id = setup["agent"]["id"]
    created = new_key(api, agent_id)
    headers = with_key(client, created["key"])
    other_worker = make_app().test_client()
    assert client.post(f"/v1/agents/{agent_id}/interact", headers=headers, json={}).status_code == 200
    api.delete(f"/v1/agents/{agent_id}/api-keys/{created['id']}")
    assert_error(client.post(f"/v1/agents/{agent_id}/interact", headers=headers, json={}), 401, "unauthorized")
    assert_error(other_worker.post(f"/v1/agents/{agent_id}/interact", headers=headers, json={}), 401, "unauthorized")

    expiring = new_key(api, agent_id)
    with app.app_context():
        db.session.get(ApiKey, expiring["id"]).expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert_error(
        client.post(f"/v1/agents/{agent_id}/interact", headers=with_key(client, expiring["key"]), json={}),
        401,
        "unauthorized",
    )


def test_a_key_only_works_for_its_own_agent(
    app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    first = deployed(app, api, reconciler, replicas=1)
    second = deployed(app, api, reconciler, replicas=1)
    key = with_key(client, new_key(api, first["agent"]["id"])["key"])
    assert_error(client.post(f"/v1/agents/{second['agent']['id']}/interact", headers=key, json={}), 404, "not_found")
    other_results = f"/v1/deployments/{second['deployment']['id']}/results"
    assert_error(client.post(other_results, headers=key, json={"results": "x"}), 404, "not_found")
    for method, path in [
        ("get", "/v1/agents"),
        ("get", f"/v1/agents/{first['agent']['id']}"),
        ("get", f"/v1/deployments/{first['deployment']['id']}"),
        ("post", f"/v1/deployments/{first['deployment']['id']}/restart"),
        ("post", f"/v1/agents/{first['agent']['id']}/api-key"),
        ("get", "/v1/secrets"),
        ("get", "/v1/auth/me"),
    ]:
        assert_error(getattr(client, method)(path, headers=key, json={}), 403, "forbidden")


def test_results_with_the_agents_key_and_scopes(
    app: Flask, api: Api, client: FlaskClient, fake_runner: FakeRunner, replicas: Any, reconciler: Reconciler
) -> None:
    setup = deployed(app, api, reconciler, replicas=1)
    agent_id, deployment_id = setup["agent"]["id"], setup["deployment"]["id"]
    results_key = with_key(client, new_key(api, agent_id, scopes=["results"])["key"])
    invoke_key = with_key(client, new_key(api, agent_id, scopes=["invoke"])["key"])
    url = f"/v1/deployments/{deployment_id}/results"
    posted = client.post(url, headers=results_key, json={"results": {"summary": "done"}})
    assert posted.status_code == 201 and posted.get_json()["created_by"].startswith("key:")
    assert client.get(url, headers=results_key).get_json()["total"] == 1
    assert_error(client.post(url, headers=invoke_key, json={"results": "x"}), 403, "forbidden")
    assert_error(client.post(f"/v1/agents/{agent_id}/interact", headers=results_key, json={}), 403, "forbidden")
    assert client.post(f"/v1/agents/{agent_id}/interact", headers=invoke_key, json={}).status_code == 200
