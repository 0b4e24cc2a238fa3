"""deployctl end to end: the real command (`python -m deploy_client`, a process of its own) against
`python app.py` (server and reconciler) on the real container engine.

The walk-through of the README's quick start: log in, apply twice (the second `unchanged`), deploy --wait, logs,
invoke, apply a new image, restart --wait (a new release), releases, rollback --wait, rm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import requests

from tests.helpers import ROOT, ProcessGroup, free_port, wait_for, wait_until

IMAGE = "deploy-test/http-agent:latest"
NEW_IMAGE = "deploy-test/http-agent:deployctl-e2e"


def test_the_deployctl_walk_through_on_the_real_engine(
    tmp_path: Path, processes: ProcessGroup, docker_engine: Any
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service_env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "SECRET_KEY"}}
    service_env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        DATABASE_URL=f"sqlite:///{tmp_path / 'service.db'}",
        PASSWORD_HASH_TIME_COST="1",
        PASSWORD_HASH_MEMORY_KIB="8",
        STARTUP_GRACE_SECONDS="0.5",
        RECONCILE_TICK_SECONDS="0.2",
        RECONCILE_INTERVAL_SECONDS="1",
        PROGRESS_DEADLINE_SECONDS="30",
        LOG_FOLLOW_MAX_SECONDS="3",
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    server = processes.spawn([sys.executable, "app.py"], env=service_env, log=tmp_path / "service.log")
    wait_for(f"{base}/health", server)
    email, password = "ops@example.com", "password-123"
    registered = requests.post(f"{base}/v1/auth/register", json={"email": email, "password": password}, timeout=10)
    assert registered.status_code == 201, registered.text
    docker_engine.images.get(IMAGE).tag(NEW_IMAGE)
    cli_env = {
        "PATH": service_env["PATH"],
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DEPLOYCTL_URL": base,
        "DEPLOYCTL_PASSWORD": password,
        "IMAGE": IMAGE,
    }

    def deployctl(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "deploy_client", *args],
            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        said = f"deployctl {' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert done.returncode == expect, said
        assert "Traceback" not in done.stderr
        return done

    def as_json(*args: str) -> Any:
        return json.loads(deployctl(*args, "-o", "json").stdout)

    spec = tmp_path / "agents" / "echo.yaml"
    spec.parent.mkdir()
    spec.write_text("name: echo\nimage: ${IMAGE}\nenv:\n  AGENT_VERSION: one\nhealth_check:\n  path: /health\n")
    deployment_id = None
    try:
        assert as_json("login", "--email", email)["role"] == "admin"
        assert as_json("whoami")["email"] == email
        assert as_json("apply", "-f", str(spec.parent))["agents"][0]["action"] == "created"
        assert as_json("apply", "-f", str(spec))["agents"][0]["action"] == "unchanged"

        deployed = deployctl("deploy", "echo", "--replicas", "2", "--wait", "--timeout", "60", "-o", "json")
        deployment = json.loads(deployed.stdout)
        deployment_id = deployment["id"]
        assert deployment["status"] == "ready" and deployment["replicas"]["ready"] == 2
        assert "Done: ready" in deployed.stderr

        answer = as_json("invoke", "echo", "--data", '{"hello": "world"}')
        assert answer["echo"] == {"hello": "world"} and answer["version"] == "one"
        assert isinstance(as_json("logs", "echo", "--tail", "50")["lines"], list)
        deployctl("logs", "echo", "-f", "--tail", "5")  # the stream, ended by LOG_FOLLOW_MAX_SECONDS

        spec.write_text(spec.read_text().replace("one", "two"))
        cli_env["IMAGE"] = NEW_IMAGE
        changed = as_json("apply", "-f", str(spec))["agents"][0]
        assert changed["action"] == "updated" and changed["changed"] == ["env", "image"]
        restarted = as_json("restart", "echo", "--wait", "--timeout", "90")
        assert restarted["revision"] == 2 and restarted["image"] == NEW_IMAGE and restarted["status"] == "ready"
        assert as_json("invoke", "echo", "--data", "{}")["version"] == "two"
        releases = as_json("releases", "echo")["items"]
        assert [(r["number"], r["status"]) for r in releases] == [(2, "active"), (1, "superseded")]

        back = as_json("rollback", "echo", "--wait", "--timeout", "90")
        assert back["revision"] == 3 and back["image"] == IMAGE
        assert as_json("invoke", "echo", "--data", "{}")["version"] == "one"
        assert [(r["number"], r["reason"], r["status"]) for r in as_json("releases", "echo")["items"]][0] == (
            3,
            "rollback",
            "active",
        )

        removed = as_json("rm", "echo", "--yes")
        assert removed["status"] == "killed"
        wait_until(lambda: not _containers(docker_engine, deployment_id), 30, what="its containers to be removed")
        deployctl("logout")
        deployctl("whoami", expect=1)
    finally:
        if deployment_id:
            for container in _containers(docker_engine, deployment_id):
                try:
                    docker_engine.api.remove_container(container["Id"], force=True)
                except docker.errors.APIError:  # already being removed by the service (or gone)
                    pass
            wait_until(lambda: not _containers(docker_engine, deployment_id), 30, what="the containers to go")
        docker_engine.images.remove(NEW_IMAGE)


def _containers(engine: Any, deployment_id: str) -> list[Any]:
    """One list call, no inspect per container (a container the service removes meanwhile is not a 404)."""
    return list(engine.api.containers(all=True, filters={"name": f"ds-{deployment_id}"}))
