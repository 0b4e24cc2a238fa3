"""deployctl's deployment commands against the app in-process, on the in-memory runner.

`--wait` polls the service as it would a real one; between polls the `converging` fixture runs a
reconciler pass, so a rollout moves on exactly as far as the reconciler takes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from deploy_service.reconciler import Reconciler
from deploy_service.settings import Settings
from tests.cli.conftest import Cli
from tests.fakes import FakeRunner
from tests.helpers import converge

V1 = "deploy-test/http-agent:latest"
V2 = "deploy-test/http-agent:v2"


def _agent(cli: Cli, tmp_path: Path, name: str = "web", image: str = V1) -> dict[str, Any]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nimage: {image}\n")
    row: dict[str, Any] = cli.json("apply", "-f", str(path))["agents"][0]
    return row


def _deployed(cli: Cli, tmp_path: Path, *args: str, name: str = "web") -> dict[str, Any]:
    _agent(cli, tmp_path, name)
    deployment: dict[str, Any] = cli.json("deploy", name, "--wait", "--timeout", "10", *args)
    assert deployment["status"] == "ready"
    return deployment


@pytest.fixture()
def cli(logged_in: Cli, converging: Callable[[], None]) -> Cli:
    return logged_in


def test_deploy_wait_prints_progress_on_stderr_and_only_the_deployment_on_stdout(
    cli: Cli, tmp_path: Path, fake_runner: FakeRunner
) -> None:
    _agent(cli, tmp_path)
    result = cli.ok("deploy", "web", "--replicas", "2", "--wait", "--timeout", "10", "-o", "json")
    deployment = json.loads(result.stdout)
    assert deployment["status"] == "ready" and deployment["replicas"] == {"desired": 2, "running": 2, "ready": 2}
    assert "accepted" in result.stderr and "deploying" in result.stderr and "Done: ready" in result.stderr
    assert len(fake_runner.of(deployment["id"])) == 2
    by_name = cli.json("status", "web")
    assert by_name["id"] == deployment["id"] and by_name["status"] == "ready"
    listed = cli.json("ps")
    assert [d["id"] for d in listed["items"]] == [deployment["id"]]
    table = cli.ok("ps", "--agent", "web", "-o", "table").stdout
    assert deployment["id"] in table and " web " in table  # the agent by its name
    table = cli.ok("status", deployment["id"], "-o", "table").stdout
    assert "ready" in table and "replica 1" in table
    conflict = cli("deploy", "web")
    assert conflict.exit_code == 1 and "conflict" in conflict.stderr and deployment["id"] in conflict.stderr


def test_deploy_wait_of_a_deployment_that_fails_is_exit_3(cli: Cli, tmp_path: Path) -> None:
    _agent(cli, tmp_path, image="deploy-test/not-there:latest")
    result = cli("deploy", "web", "--wait", "--timeout", "10", "-o", "json")
    assert result.exit_code == 3, result.stderr
    assert json.loads(result.stdout)["status"] == "failed"
    assert "Failed:" in result.stderr


def test_restart_and_rollback_wait_for_their_own_rollout_and_releases_show_it(
    cli: Cli, tmp_path: Path, fake_runner: FakeRunner
) -> None:
    fake_runner.images.add(V2)
    first = _deployed(cli, tmp_path)
    _agent(cli, tmp_path, image=V2)  # the agent's image changes: the restart is a new release
    restarted = cli.ok("restart", "web", "--wait", "--timeout", "10", "-o", "json")
    body = json.loads(restarted.stdout)
    assert body["revision"] == 2 and body["image"] == V2 and body["status"] == "ready"
    assert "Release 2 is active" in restarted.stderr or "Every replica is ready" in restarted.stderr
    running = [c for c in fake_runner.containers.values() if c.info.deployment_id == first["id"] and c.info.running]
    assert {fake_runner.image_id(c.spec.image) for c in running} == {fake_runner.image_id(V2)}
    releases = cli.json("releases", "web")["items"]
    assert [(r["number"], r["status"], r["reason"]) for r in releases] == [
        (2, "active", "restart"),
        (1, "superseded", "deploy"),
    ]
    detail = cli.json("releases", "web", "2")
    assert {"field": "image", "from": V1, "to": V2} in detail["changes"]
    assert "image" in cli.ok("releases", "web", "2", "-o", "table").stdout

    back = json.loads(cli.ok("rollback", "web", "--wait", "--timeout", "10", "-o", "json").stdout)
    assert back["revision"] == 3 and back["image"] == V1
    numbers = [(r["number"], r["status"], r["reason"], r["rollback_of"]) for r in cli.json("releases", "web")["items"]]
    assert numbers[:2] == [(3, "active", "rollback", 1), (2, "rolled_back", "restart", None)]
    again = cli.ok("rollback", "web", "--to", "2", "--wait", "--timeout", "10", "-o", "json")
    assert json.loads(again.stdout)["image"] == V2
    assert "4" in cli.ok("releases", "web", "-o", "table").stdout

    # A restart that changes nothing is no release, and --wait still waits for its replicas' rollout.
    plain = json.loads(cli.ok("restart", "web", "--wait", "--timeout", "10", "-o", "json").stdout)
    assert plain["revision"] == 4 and plain["status"] == "ready"
    assert cli.json("events", "web", "--type", "replicas_replaced")["items"]


def test_a_restart_whose_rollout_fails_and_is_rolled_back_is_exit_3(
    cli: Cli, tmp_path: Path, fake_runner: FakeRunner
) -> None:
    _deployed(cli, tmp_path)
    _agent(cli, tmp_path, image="deploy-test/gone:latest")
    result = cli("restart", "web", "--wait", "--timeout", "10", "-o", "json")
    assert result.exit_code == 3, (result.stdout, result.stderr)
    body = json.loads(result.stdout)
    assert body["status"] == "ready" and body["revision"] == 1  # the previous release still serves
    assert "Failed:" in result.stderr and "gone" in result.stderr
    statuses = [(r["number"], r["status"]) for r in cli.json("releases", "web")["items"]]
    assert statuses == [(2, "failed"), (1, "active")]


def test_scale_wait_up_and_down_and_scale_refused_when_not_running(
    cli: Cli, tmp_path: Path, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment = _deployed(cli, tmp_path)
    up = json.loads(cli.ok("scale", "web", "3", "--wait", "--timeout", "10", "-o", "json").stdout)
    assert up["replicas"] == {"desired": 3, "running": 3, "ready": 3}
    assert len([c for c in fake_runner.of(deployment["id"]) if c.running]) == 3
    down = json.loads(cli.ok("scale", "web", "1", "--wait", "--timeout", "10", "-o", "json").stdout)
    assert down["replicas"] == {"desired": 1, "running": 1, "ready": 1}
    assert len([c for c in fake_runner.of(deployment["id"]) if c.running]) == 1
    stopped = cli.json("stop", "web")
    assert stopped["desired_state"] == "stopped"
    reconciler.run_once()
    refused = cli("scale", "web", "2")
    assert refused.exit_code == 1 and "Can only scale running deployments" in refused.stderr
    assert "HTTP 400" in refused.stderr
    started = json.loads(cli.ok("restart", "web", "--wait", "--timeout", "10", "-o", "json").stdout)
    assert started["status"] == "ready"


def test_rm_asks_unless_yes_and_kills_the_deployment(cli: Cli, tmp_path: Path, fake_runner: FakeRunner) -> None:
    deployment = _deployed(cli, tmp_path)
    assert cli("rm", "web", input="n\n").exit_code == 1
    assert cli.json("status", deployment["id"])["status"] == "ready"
    removed = cli.json("rm", deployment["id"], "--yes")
    assert removed["status"] == "killed" and removed["ended_at"]
    assert cli("rm", "no-such-agent", "--yes").exit_code == 1
    assert cli.json("agents", "get", "web")["status"] == "stopped"


def test_logs_tail_replica_and_build_and_follow_reads_the_stream(
    cli: Cli, tmp_path: Path, fake_runner: FakeRunner, configure: Callable[..., Settings]
) -> None:
    deployment = _deployed(cli, tmp_path, "--replicas", "2")
    first, second = sorted(fake_runner.of(deployment["id"]), key=lambda c: c.index)
    for n in range(3):
        fake_runner.say(first.container_id, f"zero says {n}")
    fake_runner.say(second.container_id, "one says hello")
    lines = cli.json("logs", "web")["lines"]
    assert sorted(line["line"] for line in lines) == ["one says hello", "zero says 0", "zero says 1", "zero says 2"]
    tail = cli.json("logs", "web", "--tail", "1", "--replica", "0")["lines"]
    assert [line["line"] for line in tail] == ["zero says 2"]
    text = cli.ok("logs", "web", "--replica", "1").stdout
    assert text.strip().endswith("[1] one says hello")
    assert cli.json("logs", "web", "--build")["lines"] == []

    configure(LOG_FOLLOW_MAX_SECONDS=1.0, LOG_FOLLOW_POLL_SECONDS=0.05)
    followed = cli.ok("logs", "web", "-f", "--replica", "0")
    assert [line.split("] ", 1)[1] for line in followed.stdout.splitlines()] == [f"zero says {n}" for n in range(3)]
    assert "end of logs" in followed.stderr
    as_json = cli.ok("logs", "web", "-f", "--replica", "1", "-o", "json")
    assert [json.loads(line)["line"] for line in as_json.stdout.splitlines()] == ["one says hello"]


def test_events_in_order_and_follow_polls_until_the_deployment_is_killed(cli: Cli, tmp_path: Path, app: Flask) -> None:
    deployment = _deployed(cli, tmp_path)
    text = cli.ok("events", "web", "-o", "table").stdout.splitlines()
    assert "created" in text[0] and any("status_changed" in line for line in text)
    assert cli.json("events", "web", "--type", "created")["items"][0]["event_type"] == "created"

    client = app.test_client()
    token = json.loads((cli.config / "deployctl" / "credentials.json").read_text())["http://deploy.test"]
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    polls: list[int] = []

    def kill_on_second_poll(_: float) -> None:
        polls.append(1)
        if len(polls) == 2:
            assert client.delete(f"/v1/deployments/{deployment['id']}", headers=headers).status_code == 200

    cli.runtime.sleep = kill_on_second_poll
    followed = cli.ok("events", "web", "-f", "-o", "json")
    types = [json.loads(line)["event_type"] for line in followed.stdout.splitlines()]
    assert types[0] == "created"
    ids = [json.loads(line)["id"] for line in followed.stdout.splitlines()]
    assert len(ids) == len(set(ids)), "an event is printed once"
    assert "delete_requested" in types and "the deployment is killed" in followed.stderr


def test_events_without_a_deployment_are_the_feed_of_all_yours(cli: Cli, tmp_path: Path, app: Flask) -> None:
    web = _deployed(cli, tmp_path)
    api = _deployed(cli, tmp_path, name="api")
    feed = cli.json("events", "--limit", "200")
    assert {event["deployment_id"] for event in feed["items"]} == {web["id"], api["id"]}
    assert feed["items"][0]["created_at"] >= feed["items"][-1]["created_at"], "newest first, as the API pages"
    only_api = cli.json("events", "--agent", "api", "--type", "created")["items"]
    assert [(e["deployment_id"], e["event_type"]) for e in only_api] == [(api["id"], "created")]
    table = cli.ok("events", "-o", "table").stdout.splitlines()
    assert table[-1].split()[1] in (web["id"][:8], api["id"][:8]), "oldest first, each with its deployment"

    polls: list[int] = []

    class Stop(Exception):
        pass

    def restart_then_stop(_: float) -> None:
        polls.append(1)
        if len(polls) == 1:
            cli.ok("restart", "web")
        if len(polls) == 3:
            raise Stop

    cli.runtime.sleep = restart_then_stop
    followed = cli("events", "-f", "--type", "restart_requested", "-o", "json")
    assert isinstance(followed.exception, Stop)
    printed = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [(e["deployment_id"], e["event_type"]) for e in printed] == [(web["id"], "restart_requested")]


def test_metrics_with_sparklines_and_the_system_figures(cli: Cli, tmp_path: Path, reconciler: Reconciler) -> None:
    _deployed(cli, tmp_path)
    reconciler.run_once()  # a pass samples the replicas
    body = cli.json("metrics", "web", "--samples", "3", "--interval", "0")
    assert body["status"] == "ready" and len(body["samples"]["cpu_percent"]) == 3
    assert body["memory_bytes"] == 1024 * 1024  # the in-memory runner's replica 0 uses 1 MiB
    table = cli.ok("metrics", "web", "--samples", "4", "--interval", "0", "-o", "table").stdout
    assert "cpu" in table and "1.0 MiB" in table and "invocations" in table
    assert any(bars in table for bars in ("▁▁▁▁", "█")), table
    system = cli.json("metrics")
    assert system["total_deployments"] == 1 and system["by_status"]["ready"] == 1


def test_alerts_list_acknowledge_and_resolve(cli: Cli, tmp_path: Path) -> None:
    _agent(cli, tmp_path, image="deploy-test/not-there:latest")
    assert cli("deploy", "web", "--wait").exit_code == 3
    [alert] = cli.json("alerts")["items"]
    assert alert["kind"] == "deployment_failed" and alert["severity"] == "critical"
    assert "deployment_failed" in cli.ok("alerts", "-o", "table").stdout
    assert cli.json("alerts", "ack", alert["id"])["status"] == "acknowledged"
    assert cli.json("alerts")["items"] == []
    assert cli.json("alerts", "resolve", alert["id"])["status"] == "resolved"
    assert [a["status"] for a in cli.json("alerts", "--status", "all")["items"]] == ["resolved"]
    missing = cli("alerts", "ack", "no-such-alert")
    assert missing.exit_code == 1 and "not_found" in missing.stderr


def test_logs_previous_shows_a_crashed_replicas_last_lines(
    cli: Cli, tmp_path: Path, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment = _deployed(cli, tmp_path)
    [first] = fake_runner.of(deployment["id"])
    for line in ("working", "dying"):
        fake_runner.say(first.container_id, line)
    fake_runner.crash(first.container_id)
    replaced = lambda: [r.container_id for r in fake_runner.of(deployment["id"])] not in ([], [first.container_id])  # noqa: E731
    converge(reconciler, replaced)
    previous = cli.json("logs", "web", "--previous", "--replica", "0")["lines"]
    assert [line["line"] for line in previous][-2:] == ["working", "dying"]
    refused = cli("logs", "web", "--previous")
    assert refused.exit_code == 1 and "validation_error" in refused.stderr
