"""Streamed and sticky `interact` through the real server: gunicorn (gthread, two workers) and the real engine.

The service runs as in production: `scripts/serve.sh` (migrations, then gunicorn with gunicorn.conf.py)
and `flask reconcile` beside it, on a SQLite file, in an engine namespace of its own. The agents are
real containers: `deploy-test/stream-agent` (busybox httpd, a CGI script writing server-sent events
with pauses, each stamped with the second it was written) and `deploy-test/http-agent` (which answers
with its replica index). Every call is a real HTTP request to gunicorn, so what is shown here is what a
client sees: events that cross gunicorn as the agent writes them, sessions that stay on one replica
whichever worker takes the call.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import urllib3

from deploy_service.runner import LABEL_MANAGED
from tests.helpers import ProcessGroup, free_port, wait_for, wait_until

STREAM_AGENT = "deploy-test/stream-agent:latest"
HTTP_AGENT = "deploy-test/http-agent:latest"
FAST_HEALTH = {"interval_seconds": 0.3, "timeout_seconds": 1.0, "retries": 2}
SESSIONS = [f"conversation-{n}" for n in range(18)]


class Service:
    """The running service: its base URL, and an operator's requests session."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def login(self, email: str) -> dict[str, str]:
        """Register (if new) and log in `email`; returns its auth headers."""
        password = "a-long-test-password"
        requests.post(f"{self.base}/v1/auth/register", json={"email": email, "password": password}, timeout=10)
        token = requests.post(f"{self.base}/v1/auth/login", json={"email": email, "password": password}, timeout=10)
        assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> requests.Response:
        return self.http.request(method, f"{self.base}{path}", json=body, headers=headers, timeout=30)

    def deployed(self, replicas: int, **agent: Any) -> tuple[str, str]:
        """An agent made and deployed with `replicas`, once it is ready: (agent id, deployment id)."""
        created = self.call("post", "/v1/agents", {"name": f"it-{uuid.uuid4().hex[:8]}", **agent})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        deployment = self.call("post", f"/v1/agents/{agent_id}/deploy", {"replicas": replicas})
        assert deployment.status_code == 202, deployment.text
        deployment_id = deployment.json()["id"]
        wait_until(lambda: self.status(deployment_id) == "ready", 60, what="the deployment to be ready")
        return agent_id, deployment_id

    def status(self, deployment_id: str) -> str:
        status: str = self.call("get", f"/v1/deployments/{deployment_id}").json()["status"]
        return status


@pytest.fixture()
def service(docker_engine: docker.DockerClient, tmp_path: Path, processes: ProcessGroup) -> Iterator[Service]:
    namespace = f"interact-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'interact.db'}",
        "ENGINE_NAMESPACE": namespace,
        "DOCKER_NETWORK_MODE": "host",
        "HOST_NETWORK_ALLOWED": "true",
        "RECONCILER_ENABLED": "false",
        "RECONCILE_INTERVAL_SECONDS": "1",
        "RECONCILE_TICK_SECONDS": "0.1",
        "STARTUP_GRACE_SECONDS": "0.2",
        "CONTAINER_STOP_TIMEOUT": "1",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
        "RATELIMIT_ENABLED": "false",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    (tmp_path / "metrics").mkdir()
    log = tmp_path / "service.log"
    web = processes.spawn(["bash", "scripts/serve.sh"], env=env, log=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", web)
        wait_until(lambda: log.read_text().count("Booting worker") >= 2, 30, what="two gunicorn workers")
        processes.spawn(["flask", "--app", "app", "reconcile"], env=env, log=log)
        running = Service(base)
        running.http.headers.update(running.login("owner@example.com"))
        yield running
    finally:
        processes.stop_all(timeout=20)
        for container in docker_engine.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}={namespace}"}):
            container.remove(force=True)


def test_a_streamed_answer_reaches_the_client_event_by_event_through_gunicorn(service: Service) -> None:
    agent_id, deployment_id = service.deployed(
        1,
        image=STREAM_AGENT,
        invoke_path="/cgi-bin/invoke",
        health_check={"path": "/cgi-bin/health", **FAST_HEALTH},
    )
    http = urllib3.PoolManager()
    started = time.time()
    response = http.request(
        "POST",
        f"{service.base}/v1/agents/{agent_id}/interact",
        body=json.dumps({"events": 4, "pause": 1}).encode(),
        headers={**service.http.headers, "Accept": "text/event-stream", "Content-Type": "application/json"},
        preload_content=False,
    )
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    arrivals: list[tuple[float, bytes]] = []
    while piece := response.read1(65536):
        arrivals.append((time.time(), piece))
    response.release_conn()
    events = [
        json.loads(line[len("data: ") :])
        for line in b"".join(piece for _, piece in arrivals).decode().split("\n\n")
        if line.startswith("data: ")
    ]
    assert [event["n"] for event in events] == [0, 1, 2, 3]
    first_arrival = arrivals[0][0]
    assert b'"n": 0' in arrivals[0][1] and b'"n": 3' not in arrivals[0][1]
    # The agent stamps each event with the second it wrote it: the first reached the client (through
    # gunicorn) before the last was even written, three pauses of a second later.
    assert first_arrival < events[-1]["at"], (first_arrival - started, events)
    assert first_arrival - started < 2.0
    assert len(arrivals) >= 4, "one piece per event, as the agent wrote them"

    # The call's record is written once the last piece went out (the response's close): soon after the end of
    # the body reached the client, not necessarily before.
    [record] = wait_until(
        lambda: service.call("get", f"/v1/agents/{agent_id}/invocations").json()["items"], 20, what="the record"
    )
    assert record["streamed"] is True and record["status_code"] == 200 and record["error"] is None
    assert record["deployment_id"] == deployment_id and record["replica"] == 0
    assert record["first_byte_ms"] < 1500 < 3000 <= record["latency_ms"]
    assert record["response_bytes"] == sum(len(piece) for _, piece in arrivals)

    # A client that hangs up mid-stream: gunicorn closes the response, and the agent's connection with it.
    cut = http.request(
        "POST",
        f"{service.base}/v1/agents/{agent_id}/interact",
        body=json.dumps({"events": 50, "pause": 0.2}).encode(),
        headers={**service.http.headers, "Accept": "text/event-stream", "Content-Type": "application/json"},
        preload_content=False,
    )
    assert b'"n": 0' in cut.read1(65536)
    cut.close()

    def closed_record() -> dict[str, Any] | None:
        items = service.call("get", f"/v1/agents/{agent_id}/invocations").json()["items"]
        return next((item for item in items if (item["error"] or "").startswith("client_closed")), None)

    closed = wait_until(closed_record, 20, what="the hung-up stream's record")
    assert closed["streamed"] and closed["latency_ms"] < 8000, "ended when the client went, not after 50 events"

    # Without the header the same agent answers JSON, passed through as before.
    plain = service.call("post", f"/v1/agents/{agent_id}/interact", {"events": 2})
    assert plain.status_code == 200 and plain.json() == {"replica": "0", "streamed": False}


def test_sessions_stay_on_their_replica_across_workers_and_only_a_removed_replicas_sessions_move(
    service: Service,
) -> None:
    agent_id, deployment_id = service.deployed(3, image=HTTP_AGENT, health_check={"path": "/health", **FAST_HEALTH})

    def pinned() -> dict[str, str]:
        seen: dict[str, str] = {}
        for _ in range(3):
            for session in SESSIONS:
                # A new connection each call: gunicorn's two workers take them by a hash of the address.
                answer = requests.post(
                    f"{service.base}/v1/agents/{agent_id}/interact",
                    json={"session": session},
                    headers={**service.http.headers, "X-Session-Id": session, "Connection": "close"},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text
                replica = answer.json()["replica"]
                assert seen.setdefault(session, replica) == replica, f"{session} moved while its replica stayed"
        return seen

    before = pinned()
    assert set(before.values()) == {"0", "1", "2"}
    scaled = service.call("post", f"/v1/deployments/{deployment_id}/scale", {"replicas": 2})
    assert scaled.status_code == 202, scaled.text

    def two_replicas() -> bool:
        body = service.call("get", f"/v1/deployments/{deployment_id}").json()
        return body["status"] == "ready" and len(body["instances"]) == 2

    wait_until(two_replicas, 60, what="the scale down to two replicas")
    after = pinned()
    moved = {session for session in SESSIONS if after[session] != before[session]}
    assert moved == {session for session in SESSIONS if before[session] == "2"}
    assert set(after.values()) <= {"0", "1"}

    listed = service.call("get", f"/v1/agents/{agent_id}/invocations?limit=200").json()
    assert listed["total"] == len(SESSIONS) * 6
    assert {item["session_id"] for item in listed["items"]} == set(SESSIONS)
    assert all(not item["streamed"] and item["status_code"] == 200 for item in listed["items"])
    assert '"session": "conversation-' not in json.dumps(listed), "never the bodies"

    other = service.login("someone-else@example.com")
    refused = requests.get(f"{service.base}/v1/agents/{agent_id}/invocations", headers=other, timeout=10)
    assert refused.status_code == 404 and refused.json()["error"] == "not_found"
