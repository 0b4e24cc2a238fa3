"""Fixtures of the fault-injection tests: the real engine (through a cuttable proxy), real databases.

Each test works in an engine namespace of its own and removes, afterwards, every container of that
namespace (and only those), every process it started (by pid) and every server it started.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import docker
import pytest

from deploy_service.runner import LABEL_DEPLOYMENT, LABEL_MANAGED, LABEL_REPLICA
from tests.faults.engine_proxy import EngineProxy
from tests.helpers import wait_until

__all__ = ["wait_until"]  # still importable from here

HTTP_AGENT = "deploy-test/http-agent:latest"
FAST_HEALTH = {"path": "/health", "interval_seconds": 0.3, "timeout_seconds": 1.0, "retries": 2}


class EngineView:
    """The test's own, direct view of the engine (never through the proxy): one namespace's containers."""

    def __init__(self, client: docker.DockerClient, namespace: str) -> None:
        self.client, self.namespace = client, namespace

    def containers(self, deployment_id: str | None = None) -> list[Any]:
        rows = self.client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={self.namespace}"})
        return [
            SimpleNamespace(
                id=row["Id"],
                state=row["State"],
                deployment=row["Labels"].get(LABEL_DEPLOYMENT),
                replica=int(row["Labels"].get(LABEL_REPLICA, -1)),
            )
            for row in rows
            if deployment_id is None or row["Labels"].get(LABEL_DEPLOYMENT) == deployment_id
        ]

    def remove_all(self) -> None:
        for container in self.containers():
            try:
                self.client.api.remove_container(container.id, force=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture()
def namespace() -> str:
    return f"fault-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def engine_view(docker_engine: docker.DockerClient, namespace: str) -> Iterator[EngineView]:
    view = EngineView(docker_engine, namespace)
    yield view
    view.remove_all()


@pytest.fixture()
def engine_proxy() -> Iterator[EngineProxy]:
    """A running proxy to the engine socket; closed (and its socket removed) after the test."""
    proxy = EngineProxy().start()
    yield proxy
    proxy.close()
