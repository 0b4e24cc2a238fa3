"""A remote engine, as the README sets one up: the service reaches Docker over TCP, and its replicas at REPLICA_HOST.

The engine is this machine's, listened for on a loopback TCP port by `EngineProxy(tcp=True)` (the shared
engine must not be restarted to listen on TCP itself), so the service has no socket path to fall back
on: every engine call it makes crosses TCP, which the test checks in the proxy's request log. The
service is `python app.py` with `DOCKER_HOST=tcp://127.0.0.1:<port>` and `REPLICA_HOST=127.0.0.2`: the
engine host's address as the service reaches it (on a real remote host, its private address), here a
loopback address other than the service's own 127.0.0.1, so that what goes to REPLICA_HOST and what goes
to 127.0.0.1 can be told apart. Host-mode replicas listen on 0.0.0.0, which 127.0.0.2 reaches.

REPLICA_HOST is honoured for health checks and `interact` (each replica's recorded host is 127.0.0.2, and
the deployment only gets `ready` through passing health checks) and for the free-port check: a port of
HOST_PORT_RANGE held by a listener bound only to 127.0.0.2 is not handed out (tests/unit/test_ports.py
shows that one held on 127.0.0.1 alone is, with such a REPLICA_HOST).

The engine here has no `bridge` network (dockerd runs `--bridge=none`), so `auto` takes host networking,
which a remote engine without a bridge gets too; bridge mode's `PUBLISH_HOST` is shown by the unit tests.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy_service.runner import LABEL_MANAGED
from tests.faults.engine_proxy import EngineProxy
from tests.helpers import ProcessGroup, free_port, free_port_block, wait_for, wait_until

HTTP_AGENT = "deploy-test/http-agent:latest"
REPLICA_HOST = "127.0.0.2"


@pytest.fixture()
def tcp_engine(docker_engine: Any) -> Iterator[EngineProxy]:
    proxy = EngineProxy(tcp=True).start()
    yield proxy
    proxy.close()


def test_a_remote_engine_over_tcp_deploys_to_ready_and_answers_interact(
    tcp_engine: EngineProxy,
    docker_engine: Any,
    processes: ProcessGroup,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    port = free_port()
    first = free_port_block(3)  # HOST_PORT_RANGE: three ports, the first held on REPLICA_HOST
    held = socket.socket()
    request.addfinalizer(held.close)
    held.bind((REPLICA_HOST, first))
    held.listen()
    namespace = f"ds-remote-{port}"
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "SECRET_KEY"}}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        DATABASE_URL=f"sqlite:///{tmp_path / 'remote.db'}",
        DOCKER_HOST=tcp_engine.docker_host,
        REPLICA_HOST=REPLICA_HOST,
        HOST_PORT_RANGE=f"{first}-{first + 2}",
        ENGINE_NAMESPACE=namespace,
        PASSWORD_HASH_TIME_COST="1",
        PASSWORD_HASH_MEMORY_KIB="8",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    process = processes.spawn([sys.executable, "app.py"], env=env, log=tmp_path / "service.log")
    base = f"http://127.0.0.1:{port}"
    wait_for(f"{base}/health", process)
    wait_until(lambda: requests.get(f"{base}/health/ready", timeout=5).status_code == 200, 30, what="ready")

    credentials = {"email": "ops@example.com", "password": "a-long-password"}
    assert requests.post(f"{base}/v1/auth/register", json=credentials, timeout=5).status_code == 201
    token = requests.post(f"{base}/v1/auth/login", json=credentials, timeout=5).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    agent = requests.post(
        f"{base}/v1/agents",
        json={"name": "remote", "image": HTTP_AGENT, "health_check": {"path": "/health", "interval_seconds": 0.5}},
        headers=auth,
        timeout=5,
    ).json()
    deployment = requests.post(f"{base}/v1/agents/{agent['id']}/deploy", json={"replicas": 2}, headers=auth, timeout=5)
    assert deployment.status_code == 202, deployment.json()
    url = f"{base}/v1/deployments/{deployment.json()['id']}"
    wait_until(lambda: requests.get(url, headers=auth, timeout=5).json()["status"] == "ready", 60, what="ready")
    instances = requests.get(url, headers=auth, timeout=5).json()["instances"]
    assert {(instance["host"], instance["port"]) for instance in instances} == {
        (REPLICA_HOST, first + 1),
        (REPLICA_HOST, first + 2),
    }

    key = requests.post(
        f"{base}/v1/agents/{agent['id']}/api-key", json={"scopes": ["invoke"]}, headers=auth, timeout=5
    ).json()["key"]
    answer = requests.post(
        f"{base}/v1/agents/{agent['id']}/interact", json={"q": "hi"}, headers={"X-API-Key": key}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["echo"] == {"q": "hi"}
    assert any(line.startswith("POST") and "/containers/create" in line for line in tcp_engine.requests)

    assert requests.delete(url, headers=auth, timeout=5).status_code == 200
    wait_until(
        lambda: not docker_engine.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={namespace}"}),
        60,
        what="the replicas removed",
    )
