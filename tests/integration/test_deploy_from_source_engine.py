"""A deploy straight from a git repository on the real engine: one `POST /v1/deployments` with a `source` (a
local repository, allowed by the test flag `ALLOW_LOCAL_GIT_SOURCES`) makes the agent, builds the branch and
runs it to `ready`; the deployment shows the commit its current release built, and the agent's key reports
progress as events.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.integration.test_deployments_engine import (
    FAST_HEALTH,
    HTTP_AGENT,
    Client,
    Engine,
    api,
    engine,
    status_is,
    wait_until,
)

__all__ = ["api", "engine"]  # fixtures, used by name


class Repo:
    """A git repository on disk whose Dockerfile builds on the http-agent test image."""

    def __init__(self, path: Path, branch: str) -> None:
        self.path = path
        path.mkdir()
        subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
        self.commit_version("1")

    def git(self, *args: str) -> str:
        command = ["git", "-C", str(self.path), "-c", "user.email=t@example.com", "-c", "user.name=t", *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    def commit_version(self, version: str) -> str:
        """Commit a Dockerfile whose agent answers `version`; returns the new head's full SHA."""
        (self.path / "Dockerfile").write_text(f"FROM {HTTP_AGENT}\nENV AGENT_VERSION={version}\n")
        self.git("add", ".")
        self.git("commit", "-qm", f"version {version}")
        return self.git("rev-parse", "HEAD")


def test_a_deploy_from_a_repository_builds_runs_and_shows_its_commit(
    api: Client, engine: Engine, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "support-bot", "feature/ui")
    first = repo.git("rev-parse", "HEAD")
    source = {"git_url": f"file://{repo.path}", "branch": "feature/ui"}

    created = api.call("post", "/v1/deployments", {"source": source, "replicas": 2, "health_check": FAST_HEALTH})

    assert created.status_code == 202, created.get_json()
    body = created.get_json()
    assert body["source"] == {**source, "commit": None}
    deployment_id, agent_id = body["id"], body["agent_id"]
    agent = api.call("get", f"/v1/agents/{agent_id}").get_json()
    assert agent["name"] == "support-bot-feature-ui" and agent["image"] is None
    wait_until(status_is(api, deployment_id, "ready", "failed"), timeout=90, what="built and ready")
    shown = api.deployment(deployment_id)
    assert shown["status"] == "ready", shown["error"]
    assert shown["source"] == {**source, "commit": first}
    assert shown["replicas"] == {"desired": 2, "running": 2, "ready": 2}
    assert len(engine.containers(deployment_id)) == 2
    for instance in shown["instances"]:
        reply = requests.post(f"http://127.0.0.1:{instance['port']}/invoke", json={"q": "hi"}, timeout=5)
        assert reply.json()["version"] == "1"
    called = api.call("post", f"/v1/agents/{agent_id}/interact", {"q": "through the service"})
    assert called.status_code == 200 and called.get_json()["echo"] == {"q": "through the service"}

    key = api.call("post", f"/v1/agents/{agent_id}/api-key", {"scopes": ["results"]}).get_json()["key"]
    report = {"message": "Warmed the cache.", "data": {"entries": 42}}
    reported = api.client.post(f"/v1/deployments/{deployment_id}/events", headers={"X-API-Key": key}, json=report)
    assert reported.status_code == 201, reported.get_json()
    [event] = api.events(deployment_id, "agent_reported")
    assert (event["message"], event["data"], event["status"]) == ("Warmed the cache.", {"entries": 42}, "ready")

    second = repo.commit_version("2")
    assert api.call("post", f"/v1/deployments/{deployment_id}/restart").status_code == 202

    def rolled_out() -> bool:
        release = api.call("get", f"/v1/deployments/{deployment_id}/releases/2")
        return release.status_code == 200 and release.get_json()["status"] in ("active", "failed")

    wait_until(rolled_out, timeout=90, what="release 2 built from the new commit and rolled out")
    current = api.deployment(deployment_id)
    assert (current["revision"], current["status"]) == (2, "ready"), current["error"]
    assert current["source"] == {**source, "commit": second}
    for instance in api.deployment(deployment_id)["instances"]:
        reply = requests.post(f"http://127.0.0.1:{instance['port']}/invoke", json={}, timeout=5)
        assert reply.json()["version"] == "2"
    first_release = api.call("get", f"/v1/deployments/{deployment_id}/releases/1").get_json()
    assert first_release["source"]["commit"] == first
