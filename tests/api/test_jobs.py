"""Jobs: agents that run to completion (kind `job`), and the restart policies, on the in-memory runner.

The fake runner's `crash(container, exit_code=...)` stands for a container that exits on its own; the same
behaviours run against the real engine (and Swarm) in tests/integration/test_jobs_engine.py.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from deploy_service.reconciler import Reconciler
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, assert_error, converge, deploy, new_agent


def _job(app: Flask, api: Api, **overrides: Any) -> dict[str, Any]:
    return new_agent(app, api, kind="job", **overrides)


def _running(api: Api, reconciler: Reconciler, fake_runner: FakeRunner, deployment_id: str, count: int = 1) -> None:
    converge(
        reconciler,
        lambda: (
            api.deployment(deployment_id)["status"] == "running"
            and len([r for r in fake_runner.of(deployment_id) if r.running]) == count
        ),
    )


def _exit_all(fake_runner: FakeRunner, deployment_id: str, code: int) -> None:
    fake_runner.crash_all(deployment_id, exit_code=code)


# -- the agent's fields ------------------------------------------------------------------------------------


def test_kind_restart_policy_and_timeout_are_agent_fields(app: Flask, api: Api) -> None:
    base = {"image": "deploy-test/http-agent:latest"}
    service = api.post("/v1/agents", {"name": "svc", **base}).get_json()
    assert (service["kind"], service["restart_policy"], service["timeout_seconds"]) == ("service", "always", None)
    job = api.post("/v1/agents", {"name": "job", "kind": "job", "timeout_seconds": 30, **base}).get_json()
    assert (job["kind"], job["restart_policy"], job["timeout_seconds"]) == ("job", "on-failure", 30.0)
    never = api.post("/v1/agents", {"name": "never", "restart_policy": "never", **base}).get_json()
    assert (never["kind"], never["restart_policy"]) == ("service", "never")

    error = assert_error(api.post("/v1/agents", {"name": "bad", "timeout_seconds": 5, **base}), 400, "validation_error")
    assert "timeout_seconds" in error["details"]
    for body in ({"kind": "batch"}, {"restart_policy": "sometimes"}, {"kind": "job", "timeout_seconds": 0}):
        error = assert_error(api.post("/v1/agents", {"name": "bad", **base, **body}), 400, "validation_error")
        assert set(error["details"]) <= {"kind", "restart_policy", "timeout_seconds"}

    # A service never gets a timeout, also through a change of the stored agent.
    error = assert_error(api.patch(f"/v1/agents/{service['id']}", {"timeout_seconds": 5}), 409, "conflict")
    assert "timeout_seconds" in error["details"]
    assert_error(api.patch(f"/v1/agents/{job['id']}", {"kind": "service"}), 409, "conflict")
    # The kind's default policy follows a change of kind; a chosen one stays.
    changed = api.patch(f"/v1/agents/{service['id']}", {"kind": "job", "timeout_seconds": 9}).get_json()
    assert (changed["kind"], changed["restart_policy"], changed["timeout_seconds"]) == ("job", "on-failure", 9.0)
    back = api.patch(f"/v1/agents/{service['id']}", {"kind": "service", "timeout_seconds": None}).get_json()
    assert (back["kind"], back["restart_policy"], back["timeout_seconds"]) == ("service", "always", None)
    kept = api.patch(f"/v1/agents/{never['id']}", {"kind": "job"}).get_json()
    assert kept["restart_policy"] == "never"


# -- runs ----------------------------------------------------------------------------------------------------


def test_a_job_whose_replicas_exit_0_succeeds(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = _job(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    _running(api, reconciler, fake_runner, deployment["id"], count=2)
    body = api.deployment(deployment["id"])
    assert body["config"]["kind"] == "job" and body["config"]["restart_policy"] == "on-failure"
    assert all(i["healthy"] is None for i in body["instances"])  # never health-checked
    assert_error(api.post(f"/v1/agents/{agent['id']}/interact", {"q": 1}), 409, "invalid_state")
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/restart"), 409, "invalid_state")

    first = fake_runner.of(deployment["id"])[0]
    fake_runner.crash(first.container_id, exit_code=0)
    converge(reconciler, lambda: bool(api.events(deployment["id"], event_type="replica_succeeded")))
    body = api.deployment(deployment["id"])
    assert body["status"] == "running"
    assert [i["status"] for i in body["instances"]] == ["succeeded", "running"]
    assert api.events(deployment["id"], event_type="container_restarted") == []  # an exit 0 is never restarted

    _exit_all(fake_runner, deployment["id"], 0)
    converge(reconciler, api.status_is(deployment["id"], "succeeded"))
    body = api.deployment(deployment["id"])
    assert body["ended_at"] is not None and body["error"] is None
    assert [(i["status"], i["exit_code"]) for i in body["instances"]] == [("succeeded", 0), ("succeeded", 0)]
    assert fake_runner.of(deployment["id"]) == []  # containers removed
    assert api.get(f"/v1/agents/{agent['id']}").get_json()["status"] == "stopped"
    assert len(api.events(deployment["id"], event_type="job_succeeded")) == 1
    [release] = api.get(f"/v1/deployments/{deployment['id']}/releases").get_json()["items"]
    assert release["status"] == "active"
    reconciler.run_once()  # an ended job stays ended
    assert api.deployment(deployment["id"])["status"] == "succeeded"
    assert fake_runner.of(deployment["id"]) == []


def test_a_job_that_exits_before_it_is_seen_running_succeeds(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = _job(app, api)
    deployment = deploy(api, agent["id"])
    converge(reconciler, lambda: bool(fake_runner.of(deployment["id"])))
    _exit_all(fake_runner, deployment["id"], 0)
    converge(reconciler, api.status_is(deployment["id"], "succeeded"))
    statuses = [e["data"]["to"] for e in reversed(api.events(deployment["id"], event_type="status_changed"))]
    assert statuses[-1] == "succeeded"
    [release] = api.get(f"/v1/deployments/{deployment['id']}/releases").get_json()["items"]
    assert release["status"] == "active"


def test_a_job_with_restart_policy_never_fails_at_its_first_non_zero_exit(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = _job(app, api, restart_policy="never")
    deployment = deploy(api, agent["id"])
    _running(api, reconciler, fake_runner, deployment["id"])
    _exit_all(fake_runner, deployment["id"], 7)
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    body = api.deployment(deployment["id"])
    assert "code 7" in body["error"] and "never" in body["error"]
    assert body["ended_at"] is not None
    assert [(i["status"], i["exit_code"], i["restarts"]) for i in body["instances"]] == [("failed", 7, 1)]
    assert api.events(deployment["id"], event_type="restart_backoff") == []
    assert fake_runner.of(deployment["id"]) == []
    assert api.get(f"/v1/agents/{agent['id']}").get_json()["status"] == "stopped"


def test_a_job_on_failure_is_restarted_within_the_budget_then_fails_naming_the_exit_code(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = _job(app, api)
    deployment = deploy(api, agent["id"])
    _running(api, reconciler, fake_runner, deployment["id"])

    def crash() -> bool:
        _exit_all(fake_runner, deployment["id"], 5)
        return api.deployment(deployment["id"])["status"] == "failed"

    converge(reconciler, crash)
    body = api.deployment(deployment["id"])
    assert "exit code 5" in body["error"] and f"restart budget of {FAST.restart_budget}" in body["error"]
    assert len(api.events(deployment["id"], event_type="restart_backoff")) == FAST.restart_budget
    assert body["instances"][0]["status"] == "failed" and body["instances"][0]["exit_code"] == 5
    assert body["instances"][0]["restarts"] == FAST.restart_budget + 1


def test_a_job_restarted_after_a_failure_can_still_succeed(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = _job(app, api)
    deployment = deploy(api, agent["id"])
    _running(api, reconciler, fake_runner, deployment["id"])
    _exit_all(fake_runner, deployment["id"], 2)
    converge(reconciler, lambda: bool(api.events(deployment["id"], event_type="container_restarted")))
    _running(api, reconciler, fake_runner, deployment["id"])
    _exit_all(fake_runner, deployment["id"], 0)
    converge(reconciler, api.status_is(deployment["id"], "succeeded"))
    assert api.deployment(deployment["id"])["instances"][0]["restarts"] == 1


def test_a_job_past_its_timeout_fails_and_its_containers_are_stopped(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = _job(app, api, timeout_seconds=0.3)
    deployment = deploy(api, agent["id"])
    _running(api, reconciler, fake_runner, deployment["id"])
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    body = api.deployment(deployment["id"])
    assert "timeout of 0.3s" in body["error"]
    assert fake_runner.of(deployment["id"]) == []
    [timed_out] = api.events(deployment["id"], event_type="job_timed_out")
    assert "0.3s" in timed_out["message"]


def test_a_job_runs_again_with_restart_as_a_new_release_only_when_something_changed(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = _job(app, api)
    deployment = deploy(api, agent["id"])
    _running(api, reconciler, fake_runner, deployment["id"])
    _exit_all(fake_runner, deployment["id"], 0)
    converge(reconciler, api.status_is(deployment["id"], "succeeded"))

    again = api.post(f"/v1/deployments/{deployment['id']}/restart")
    assert again.status_code == 202, again.get_json()
    assert again.get_json()["status"] == "deploying" and again.get_json()["ended_at"] is None
    assert len(api.events(deployment["id"], event_type="replicas_replaced")) == 1
    _running(api, reconciler, fake_runner, deployment["id"])
    assert api.get(f"/v1/agents/{agent['id']}").get_json()["status"] == "deployed"
    _exit_all(fake_runner, deployment["id"], 0)
    converge(reconciler, api.status_is(deployment["id"], "succeeded"))
    assert api.get(f"/v1/deployments/{deployment['id']}/releases").get_json()["total"] == 1

    api.patch(f"/v1/agents/{agent['id']}", {"env": {"MODE": "second"}})
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    releases = api.get(f"/v1/deployments/{deployment['id']}/releases").get_json()
    assert releases["total"] == 2
    detail = api.get(f"/v1/deployments/{deployment['id']}/releases/2").get_json()
    assert {"field": "config.env.MODE", "from": None, "to": "second"} in detail["changes"]
    _running(api, reconciler, fake_runner, deployment["id"])
    _exit_all(fake_runner, deployment["id"], 0)
    converge(reconciler, api.status_is(deployment["id"], "succeeded"))


def test_a_failed_job_runs_again_and_a_job_is_deleted_at_any_time(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = _job(app, api, restart_policy="never")
    deployment = deploy(api, agent["id"])
    _running(api, reconciler, fake_runner, deployment["id"])
    _exit_all(fake_runner, deployment["id"], 1)
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    _running(api, reconciler, fake_runner, deployment["id"])
    assert api.deployment(deployment["id"])["error"] is None
    deleted = api.delete(f"/v1/deployments/{deployment['id']}")
    assert deleted.status_code == 200 and deleted.get_json()["status"] == "killed"
    converge(reconciler, lambda: fake_runner.of(deployment["id"]) == [])


def test_a_service_with_restart_policy_never_fails_at_once_when_a_replica_crashes(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api, restart_policy="never")
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    first = fake_runner.of(deployment["id"])[0]
    fake_runner.crash(first.container_id, exit_code=0)  # a service is not meant to exit, even with 0
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    body = api.deployment(deployment["id"])
    assert "never" in body["error"] and body["ended_at"] is None
    assert api.events(deployment["id"], event_type="container_restarted") == []
    assert fake_runner.of(deployment["id"]) == []
    assert api.get(f"/v1/agents/{agent['id']}").get_json()["status"] == "deployed"
