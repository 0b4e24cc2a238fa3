"""deployctl invoke, keys and secrets against the app in-process (the agent's replica a real loopback server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from deploy_service.runner.base import ReplicaSpec
from tests.cli.conftest import Cli
from tests.factories import UserRef
from tests.fakes import FakeRunner


class Echo(BaseHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if "text/event-stream" in (self.headers.get("Accept") or "") and not request.get("plain"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # no length: the stream ends when the connection closes (HTTP/1.0)
            for word in str(request.get("q", "")).split():
                self.wfile.write(f"data: {word}\n\n".encode())
                self.wfile.flush()
            return
        status = 500 if request.get("fail") else 200
        body = json.dumps({"echo": request}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def served(fake_runner: FakeRunner) -> Iterator[None]:
    servers: list[ThreadingHTTPServer] = []

    def serve(spec: ReplicaSpec) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", spec.port), Echo)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

    fake_runner.on_start = serve
    yield
    for server in servers:
        server.shutdown()
        server.server_close()


def _agent(cli: Cli, tmp_path: Path, name: str = "echo") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nimage: deploy-test/http-agent:latest\n")
    agent_id: str = cli.json("apply", "-f", str(path))["agents"][0]["id"]
    return agent_id


def test_invoke_prints_the_agents_json_answer(
    logged_in: Cli, converging: Callable[[], None], served: None, tmp_path: Path
) -> None:
    _agent(logged_in, tmp_path)
    logged_in.json("deploy", "echo", "--wait", "--timeout", "10")
    result = logged_in.ok("invoke", "echo", "--data", '{"q": "hello"}')
    assert json.loads(result.stdout) == {"echo": {"q": "hello"}}
    piped = logged_in.ok("invoke", "echo", "--data", "-", input='{"from": "stdin"}')
    assert json.loads(piped.stdout) == {"echo": {"from": "stdin"}}
    failed = logged_in("invoke", "echo", "--data", '{"fail": true}')
    assert failed.exit_code == 1 and json.loads(failed.stdout) == {"echo": {"fail": True}}
    assert "HTTP 500" in failed.stderr
    bad = logged_in("invoke", "echo", "--data", "{not json")
    assert bad.exit_code == 2 and "not JSON" in bad.stderr


def test_invoke_streams_the_answer_as_it_comes_and_keeps_a_session(
    logged_in: Cli, converging: Callable[[], None], served: None, tmp_path: Path, app: Flask, user: UserRef
) -> None:
    agent_id = _agent(logged_in, tmp_path)
    logged_in.json("deploy", "echo", "--wait", "--timeout", "10")
    streamed = logged_in.ok("invoke", "echo", "--stream", "--data", '{"q": "one two three"}')
    assert streamed.stdout == "data: one\n\ndata: two\n\ndata: three\n\n"
    plain = logged_in.ok("invoke", "echo", "--stream", "--data", '{"q": "x", "plain": true}')
    assert json.loads(plain.stdout) == {"echo": {"q": "x", "plain": True}}, "a JSON answer is shown as JSON"
    logged_in.ok("invoke", "echo", "--session", "chat-7", "--data", "{}")
    logged_in.ok("invoke", "echo", "--session", "chat-7", "--stream", "--data", '{"q": "hi"}')
    client = app.test_client()
    login = client.post("/v1/auth/login", json={"email": user.email, "password": user.password}).get_json()
    page = client.get(
        f"/v1/agents/{agent_id}/invocations?limit=10", headers={"Authorization": f"Bearer {login['access_token']}"}
    ).get_json()
    sessions = [(item["session_id"], item["streamed"]) for item in page["items"]]
    assert ("chat-7", False) in sessions and ("chat-7", True) in sessions


def test_invoke_without_a_deployment_is_the_services_error(logged_in: Cli, tmp_path: Path) -> None:
    _agent(logged_in, tmp_path)
    result = logged_in("invoke", "echo", "--data", "{}")
    assert result.exit_code == 1 and result.stdout == ""
    assert "The agent is not running. (no_ready_replica, HTTP 503)" in result.stderr


def test_keys_create_ls_revoke(logged_in: Cli, tmp_path: Path, app: Flask) -> None:
    agent_id = _agent(logged_in, tmp_path)
    created = logged_in.ok("keys", "create", "echo", "--name", "ci", "--scope", "invoke", "-o", "json")
    key = json.loads(created.stdout)
    assert key["key"].startswith(key["prefix"]) and key["scopes"] == ["invoke"] and key["name"] == "ci"
    assert "not shown again" in created.stderr and key["key"] not in created.stderr
    listed = logged_in.json("keys", "ls", "echo")["items"]
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    assert key["key"] not in logged_in.ok("keys", "ls", agent_id, "-o", "table").stdout
    client = app.test_client()
    headers = {"X-API-Key": key["key"]}
    assert client.post(f"/v1/agents/{agent_id}/interact", headers=headers, json={}).status_code != 401
    logged_in.ok("keys", "revoke", "echo", key["id"])
    assert client.post(f"/v1/agents/{agent_id}/interact", headers=headers, json={}).status_code == 401
    assert logged_in("keys", "revoke", "echo", "no-such-key").exit_code == 1


def test_secrets_set_from_an_option_or_stdin_ls_and_rm(logged_in: Cli) -> None:
    made = logged_in.json("secrets", "set", "db-password", "--value", "hunter2-hunter2")
    assert made["name"] == "db-password" and "value" not in made
    piped = logged_in.ok("secrets", "set", "api-token", "-o", "json", input="from-stdin-value\n")
    assert json.loads(piped.stdout)["name"] == "api-token" and "from-stdin-value" not in piped.stdout
    listed = logged_in.ok("secrets", "ls", "-o", "json").stdout
    assert sorted(s["name"] for s in json.loads(listed)) == ["api-token", "db-password"]
    assert "hunter2" not in listed and "from-stdin-value" not in listed
    again = logged_in.ok("secrets", "set", "db-password", "--value", "other-value", "-o", "json")
    rotated = json.loads(again.stdout)
    assert rotated["id"] == made["id"] and rotated["used_by"] == [] and "other-value" not in again.stdout
    assert "has a new value" in again.stderr
    logged_in.ok("secrets", "rm", "db-password")
    assert [s["name"] for s in logged_in.json("secrets", "ls")] == ["api-token"]
    missing = logged_in("secrets", "rm", "db-password")
    assert missing.exit_code == 1 and "No secret named" in missing.stderr
    assert logged_in("secrets", "set", "empty", input="").exit_code == 2
