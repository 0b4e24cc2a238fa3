"""Deployment routes and the reconciler's decisions, on the in-memory runner (fast, deterministic).

`FAST`, `Api`, `converge`, `deploy` and `new_agent` live in tests/helpers.py.

The same behaviours run against the real engine in tests/integration/test_deployments_engine.py.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from sqlalchemy import func, select, text

from deploy_service.extensions import db
from deploy_service.models import Agent, Deployment, DeploymentEvent
from deploy_service.reconciler import Reconciler, apply
from tests.factories import make_agent, make_secret, make_user
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, Clock, assert_error, converge, deploy, new_agent


def test_deploy_is_accepted_and_recorded(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    agent = new_agent(app, api)
    body = deploy(api, agent["id"], replicas=2, env={"MODE": "test"})
    assert body["status"] == "deploying"
    assert body["desired_state"] == "running"
    assert body["replicas"] == {"desired": 2, "running": 0, "ready": 0}
    assert body["agent_id"] == agent["id"]
    assert body["config"]["env"] == {"MODE": "test"}
    assert body["image"] == "deploy-test/http-agent:latest"
    assert sorted(event["event_type"] for event in api.events(body["id"])) == [
        "created",
        "release_created",
        "rollout_started",
    ]
    assert body["revision"] == 1
    assert api.get(f"/v1/agents/{agent['id']}").get_json()["status"] == "deployed"
    assert fake_runner.containers == {}


def test_one_live_deployment_per_agent(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    agent = new_agent(app, api)
    first = deploy(api, agent["id"])
    error = assert_error(api.post(f"/v1/agents/{agent['id']}/deploy", {}), 409, "conflict")
    assert error["details"]["deployment_id"] == first["id"]
    assert_error(api.post("/v1/agents/deploy", {"agent_id": agent["id"]}), 409, "conflict")


def test_agent_centric_deploy_paths(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    one, two = new_agent(app, api), new_agent(app, api)
    assert api.post(f"/v1/agents/{one['id']}/deploy", {"replicas": 2}).status_code == 202
    assert api.post("/v1/agents/deploy", {"agent_id": two["id"]}).status_code == 202
    status = api.get(f"/v1/agents/{one['id']}/deployment-status").get_json()
    assert status["agent_id"] == one["id"] and status["status"] == "deploying"
    assert status["replicas"]["desired"] == 2
    never = new_agent(app, api)
    assert_error(api.get(f"/v1/agents/{never['id']}/deployment-status"), 404, "not_found")
    assert_error(api.post(f"/v1/agents/{never['id']}/undeploy"), 404, "not_found")
    assert_error(api.post(f"/v1/agents/{never['id']}/restart"), 409, "invalid_state")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"replicas": 0}, "replicas"),
        ({"replicas": 51}, "replicas"),
        ({"privileged": True}, "privileged"),
        ({"env": {"PORT": "1"}}, "env"),
        ({"resources": {"cpu": 99}}, "resources"),
    ],
)
def test_deploy_validation(app: Flask, api: Api, fake_runner: FakeRunner, body: dict[str, Any], field: str) -> None:
    agent = new_agent(app, api)
    error = assert_error(api.post(f"/v1/agents/{agent['id']}/deploy", body), 400, "validation_error")
    assert field in error["details"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Deployment)) == 0


def test_other_users_agents_and_deployments_are_404(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    owner = make_user(app)
    theirs = make_agent(app, owner)
    assert_error(api.post("/v1/deployments", {"agent_id": theirs["id"]}), 404, "not_found")
    from tests.factories import make_deployment

    deployment = make_deployment(app, owner, theirs["id"])
    for path in ("", "/events", "/logs", "/results"):
        assert_error(api.get(f"/v1/deployments/{deployment['id']}{path}"), 404, "not_found")
    for path in ("/restart", "/stop", "/scale"):
        assert_error(api.post(f"/v1/deployments/{deployment['id']}{path}", {"replicas": 2}), 404, "not_found")
    assert_error(api.delete(f"/v1/deployments/{deployment['id']}"), 404, "not_found")
    assert api.get("/v1/deployments").get_json()["total"] == 0


def test_engine_down_means_503_and_nothing_written(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    agent = new_agent(app, api)
    fake_runner.down = True
    assert_error(api.post(f"/v1/agents/{agent['id']}/deploy", {}), 503, "engine_unavailable")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Deployment)) == 0
        assert db.session.get(Agent, agent["id"]).status == "idle"
    fake_runner.down = False
    deployment = deploy(api, agent["id"])
    fake_runner.down = True
    for path in ("/restart", "/stop"):
        assert api.post(f"/v1/deployments/{deployment['id']}{path}").status_code in (409, 503)
    assert_error(api.delete(f"/v1/deployments/{deployment['id']}"), 503, "engine_unavailable")
    assert api.deployment(deployment["id"])["status"] == "deploying"
    assert api.get("/health/ready").status_code == 503


def test_reconciler_brings_a_deployment_to_ready(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=3)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    body = api.deployment(deployment["id"])
    assert body["replicas"] == {"desired": 3, "running": 3, "ready": 3}
    assert sorted(i["index"] for i in body["instances"]) == [0, 1, 2]
    assert len({i["port"] for i in body["instances"]}) == 3
    assert all(i["container_id"] and i["healthy"] for i in body["instances"])
    assert body["started_at"] and body["ready_at"]
    types = [event["event_type"] for event in reversed(api.events(deployment["id"]))]
    assert types[0] == "created" and "image_ready" in types
    assert types.count("container_started") == 3
    statuses = [e["data"]["to"] for e in reversed(api.events(deployment["id"], event_type="status_changed"))]
    assert statuses == ["running", "ready"]
    specs = [c.spec for c in fake_runner.containers.values()]
    assert {spec.env.get("MODE") for spec in specs} == {None}
    # Idempotent: another pass changes nothing.
    count = len(api.events(deployment["id"]))
    reconciler.run_once()
    assert len(api.events(deployment["id"])) == count
    assert len(fake_runner.of(deployment["id"])) == 3


def test_secrets_are_injected_but_never_shown(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    me = api.get("/v1/auth/me").get_json()
    owner = type("Owner", (), {"id": me["id"]})
    make_secret(app, owner, "token", "very-secret-value")  # type: ignore[arg-type]
    agent = new_agent(app, api, secrets={"TOKEN": "token"}, env={"A": "1"})
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    [container] = fake_runner.of(deployment["id"])
    spec = fake_runner.containers[container.container_id].spec
    assert spec.env == {"A": "1", "TOKEN": "very-secret-value"}
    for path in ("", "/events"):
        assert "very-secret-value" not in api.get(f"/v1/deployments/{deployment['id']}{path}").get_data(as_text=True)
    assert api.deployment(deployment["id"])["config"]["secrets"] == {"TOKEN": "token"}


def test_the_agents_run_as_user_reaches_the_runner_and_the_resolved_config(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    chosen = deploy(api, new_agent(app, api, run_as_user="4242:4343")["id"])
    unset = deploy(api, new_agent(app, api)["id"])
    converge(reconciler, lambda: all(api.deployment(d["id"])["status"] == "ready" for d in (chosen, unset)))

    for deployment, user in [(chosen, "4242:4343"), (unset, None)]:
        assert api.deployment(deployment["id"])["config"]["run_as_user"] == user
        [container] = fake_runner.of(deployment["id"])
        assert fake_runner.containers[container.container_id].spec.run_as_user == user


def test_scale_rules_and_container_counts(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    error = assert_error(api.post(f"/v1/deployments/{deployment['id']}/scale", {"replicas": 2}), 400, "invalid_state")
    assert error["message"] == "Can only scale running deployments"
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.post(f"/v1/deployments/{deployment['id']}/scale", {"replicas": 3}).status_code == 202
    converge(reconciler, lambda: api.deployment(deployment["id"])["replicas"]["ready"] == 3)
    assert len(fake_runner.of(deployment["id"])) == 3
    assert api.post(f"/v1/deployments/{deployment['id']}/scale", {"replicas": 1}).status_code == 202
    converge(reconciler, lambda: len(fake_runner.of(deployment["id"])) == 1)
    body = api.deployment(deployment["id"])
    assert body["replicas"] == {"desired": 1, "running": 1, "ready": 1}
    assert [i["index"] for i in body["instances"]] == [0]
    assert fake_runner.of(deployment["id"])[0].index == 0
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/scale", {"replicas": 0}), 400, "validation_error")
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/scale", {}), 400, "validation_error")
    assert {e["data"]["to"] for e in api.events(deployment["id"], event_type="scaled")} == {3, 1}


def test_rolling_restart_replaces_one_replica_at_a_time(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=3)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    before = {c.container_id for c in fake_runner.of(deployment["id"])}
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    old_counts: list[int] = []

    def done() -> bool:
        containers = fake_runner.of(deployment["id"])
        old_counts.append(sum(1 for c in containers if c.container_id in before))
        assert len(containers) >= 2, "a rolling restart keeps the other replicas up"
        return old_counts[-1] == 0 and api.deployment(deployment["id"])["status"] == "ready"

    converge(reconciler, done)
    assert old_counts[0] >= 2
    assert all(earlier - later <= 1 for earlier, later in zip(old_counts, old_counts[1:], strict=False))
    assert {c.generation for c in fake_runner.of(deployment["id"])} == {2}
    replaced = api.events(deployment["id"], event_type="replica_replaced")
    assert sorted(event["data"]["replica"] for event in replaced) == [0, 1, 2]
    assert len(fake_runner.of(deployment["id"])) == 3
    assert api.events(deployment["id"], event_type="restart_requested")[0]["data"]["mode"] == "rolling"


def test_a_rolling_update_starts_the_next_replica_while_the_old_one_it_follows_is_removed(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=3)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    started: dict[int, threading.Event] = {index: threading.Event() for index in range(3)}
    fake_runner.on_start = lambda spec: started[spec.index].set() if spec.generation == 2 else None
    overlapped: dict[int, bool] = {}
    stop = fake_runner.stop_replica

    def stop_waiting_for_the_next_start(container: str, *, stop_timeout: float = 10.0) -> None:
        info = fake_runner.containers[container].info
        if info.generation == 1 and info.index < 2:
            # Run one after the other, the next replica would start only after this returns.
            overlapped[info.index] = started[info.index + 1].wait(timeout=5)
        stop(container, stop_timeout=stop_timeout)

    monkeypatch.setattr(fake_runner, "stop_replica", stop_waiting_for_the_next_start)
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(
        reconciler,
        lambda: (
            {c.generation for c in fake_runner.of(deployment["id"])} == {2}
            and api.deployment(deployment["id"])["status"] == "ready"
        ),
    )
    assert overlapped == {0: True, 1: True}
    assert sorted(e["data"]["replica"] for e in api.events(deployment["id"], event_type="replica_replaced")) == [
        0,
        1,
        2,
    ]


def test_a_release_is_active_once_its_last_replica_is_ready_before_the_last_old_one_is_removed(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    """The last old replica serves nothing once its replacement is ready (its slot names the new one): the
    rollout's completion (and a new release's activation) does not wait for that removal, which follows in
    the same pass."""
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, lambda: len(api.events(deployment["id"], event_type="replica_replaced")) == 2)
    steps = [
        e["event_type"] if e["event_type"] == "replica_replaced" else "ready"
        for e in reversed(api.events(deployment["id"], limit=200))
        if e["event_type"] == "replica_replaced" or (e["event_type"] == "status_changed" and e["data"]["to"] == "ready")
    ]
    # ready after the deploy; replica 0 replaced; ready again (every replica of the rollout ready), and only
    # then replica 1's old container removed
    assert steps == ["ready", "replica_replaced", "ready", "replica_replaced"], steps
    assert len(fake_runner.of(deployment["id"])) == 2


def test_the_pass_in_which_a_rollouts_replica_turns_ready_asks_for_the_next_pass_at_once(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    """Not at whichever health check or tick happens to be due next: each step of a rolling update follows
    the last one's readiness at once."""
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202

    def ready_containers() -> set[str]:
        return {i["container_id"] for i in api.deployment(deployment["id"])["instances"] if i["healthy"]}

    waits: list[tuple[float, bool]] = []

    def replaced() -> bool:
        before = ready_containers()
        wait = reconciler.run_once()
        waits.append((wait, bool(ready_containers() - before)))
        return len(api.events(deployment["id"], event_type="replica_replaced")) == 2

    converge(reconciler, replaced)
    turned_ready = [wait for wait, newly in waits if newly]
    assert len(turned_ready) == 2 and all(wait <= 0.01 for wait in turned_ready), waits


def test_a_crashed_replica_is_removed_before_its_restart_takes_its_name(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=1)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    first = fake_runner.of(deployment["id"])[0]
    fake_runner.crash(first.container_id)
    converge(
        reconciler,
        lambda: (
            api.deployment(deployment["id"])["instances"][0]["restarts"] == 1
            and api.deployment(deployment["id"])["status"] == "ready"
        ),
    )
    [now] = fake_runner.of(deployment["id"])
    assert now.container_id != first.container_id and now.name == first.name


def test_stop_restart_and_delete(app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/restart"), 409, "invalid_state")
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.post(f"/v1/deployments/{deployment['id']}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "stopped"))
    assert fake_runner.of(deployment["id"]) == []
    stopped = api.deployment(deployment["id"])
    assert stopped["replicas"]["running"] == 0 and stopped["instances"] == []
    assert api.get(f"/v1/agents/{agent['id']}").get_json()["status"] == "stopped"
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/scale", {"replicas": 3}), 400, "invalid_state")
    assert api.post(f"/v1/deployments/{deployment['id']}/stop").status_code == 202

    assert api.post(f"/v1/agents/{agent['id']}/restart").status_code == 202
    assert api.deployment(deployment["id"])["status"] == "deploying"
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert len(fake_runner.of(deployment["id"])) == 2

    deleted = api.post(f"/v1/agents/{agent['id']}/undeploy")
    assert deleted.status_code == 200
    body = deleted.get_json()
    assert body["status"] == "killed" and body["ended_at"]
    assert api.get(f"/v1/agents/{agent['id']}").get_json()["status"] == "stopped"
    reconciler.run_once()
    assert fake_runner.of(deployment["id"]) == []
    again = api.delete(f"/v1/deployments/{deployment['id']}")
    assert again.status_code == 200 and again.get_json()["ended_at"] == body["ended_at"]
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/restart"), 409, "invalid_state")
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/stop"), 409, "invalid_state")
    status = api.get(f"/v1/agents/{agent['id']}/deployment-status").get_json()
    assert status["status"] == "killed"
    assert deploy(api, agent["id"])["id"] != deployment["id"]


def test_delete_answers_without_engine_work_and_the_next_pass_removes_the_containers(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    """DELETE writes desired state and returns: no container is stopped inside the request."""
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=3)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    containers = {c.container_id for c in fake_runner.of(deployment["id"])}
    assert len(containers) == 3
    fake_runner.calls.clear()

    response = api.delete(f"/v1/deployments/{deployment['id']}")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "killed" and body["desired_state"] == "deleted" and body["ended_at"]
    assert body["replicas"] == {"desired": 0, "running": 0, "ready": 0} and body["instances"] == []
    assert fake_runner.calls == ["ping"]  # the engine is asked whether it answers, nothing more
    assert {c.container_id for c in fake_runner.of(deployment["id"])} == containers
    assert [event["event_type"] for event in api.events(deployment["id"])][:2] == ["status_changed", "delete_requested"]
    assert api.get(f"/v1/agents/{agent['id']}").get_json()["status"] == "stopped"

    reconciler.run_once()

    assert fake_runner.of(deployment["id"]) == []
    assert fake_runner.calls.count("remove_replica") == 3
    assert api.delete(f"/v1/deployments/{deployment['id']}").get_json() == body


def test_stored_statuses_are_the_contract_strings(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    """The enums are written as their plain values: the rows hold exactly what the contract names."""
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.delete(f"/v1/deployments/{deployment['id']}").status_code == 200
    with app.app_context():
        row = db.session.execute(
            text("SELECT status, desired_state FROM deployments WHERE id = :id"), {"id": deployment["id"]}
        ).one()
        instance = db.session.execute(
            text("SELECT status FROM deployment_instances WHERE deployment_id = :id"), {"id": deployment["id"]}
        ).scalar_one()
        agent_status = db.session.execute(text("SELECT status FROM agents WHERE id = :id"), {"id": agent["id"]})
        events = db.session.execute(
            select(DeploymentEvent.status, DeploymentEvent.data).where(
                DeploymentEvent.deployment_id == deployment["id"], DeploymentEvent.event_type == "status_changed"
            )
        ).all()
    assert tuple(row) == ("killed", "deleted")
    assert instance == "removed" and agent_status.scalar_one() == "stopped"
    assert {(status, data["from"], data["to"]) for status, data in events} == {
        ("running", "deploying", "running"),
        ("ready", "running", "ready"),
        ("killed", "ready", "killed"),
    }


def test_crashing_replica_backs_off_then_fails(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    fake_runner.crash_all(deployment["id"], exit_code=3)
    converge(reconciler, lambda: bool(api.events(deployment["id"], event_type="container_restarted")))
    exited = api.events(deployment["id"], event_type="container_exited")[0]
    assert exited["data"]["exit_code"] == 3 and exited["data"]["oom_killed"] is False
    assert api.events(deployment["id"], event_type="restart_backoff")[0]["data"]["attempt"] == 1
    assert api.deployment(deployment["id"])["instances"][0]["restarts"] == 1

    def crash_again() -> bool:
        fake_runner.crash_all(deployment["id"], exit_code=3, oom=True)
        return api.deployment(deployment["id"])["status"] == "failed"

    converge(reconciler, crash_again)
    body = api.deployment(deployment["id"])
    assert "kept crashing" in body["error"]
    assert "out of memory" in body["error"]
    assert fake_runner.of(deployment["id"]) == []
    delays = [e["data"]["delay_seconds"] for e in reversed(api.events(deployment["id"], event_type="restart_backoff"))]
    assert delays == sorted(delays) and len(delays) == FAST.restart_budget


def test_backoff_starts_again_from_the_base_delay_after_the_stable_period(
    app: Flask, api: Api, fake_runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(FAST, stable_seconds=30.0, restart_budget=2, backoff_base=0.01, backoff_max=1.0)
    clock = Clock(running=True)  # the passes' `now`: real time, plus the stable period skipped at once
    monkeypatch.setattr(apply, "utcnow", clock)
    reconciler = Reconciler(app, runner=fake_runner, settings=settings)
    try:
        agent = new_agent(app, api)
        deployment = deploy(api, agent["id"])
        converge(reconciler, api.status_is(deployment["id"], "ready"))

        def crash_and_restart() -> dict[str, Any]:
            """Crash the replica; once it runs again, the backoff event of that crash."""
            [before] = fake_runner.of(deployment["id"])
            fake_runner.crash(before.container_id)
            converge(
                reconciler,
                lambda: (
                    [r.running for r in fake_runner.of(deployment["id"])] == [True]
                    and fake_runner.of(deployment["id"])[0].container_id != before.container_id
                ),
            )
            converge(reconciler, api.status_is(deployment["id"], "ready"))
            data: dict[str, Any] = api.events(deployment["id"], event_type="restart_backoff")[0]["data"]
            return data

        first = crash_and_restart()
        assert (first["attempt"], first["delay_seconds"]) == (1, settings.backoff_base)
        second = crash_and_restart()  # up for far less than the stable period: the count goes on
        assert (second["attempt"], second["delay_seconds"]) == (2, 2 * settings.backoff_base)

        clock.advance(settings.stable_seconds)
        reconciler.run_once()  # a pass sees the replica up for the stable period
        third = crash_and_restart()  # with the count gone on, this would have spent the budget of 2: failed
        assert (third["attempt"], third["delay_seconds"]) == (1, settings.backoff_base)
        assert api.deployment(deployment["id"])["instances"][0]["restarts"] == 3
    finally:
        reconciler.close()


def test_container_removed_by_hand_is_recreated(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    victim = fake_runner.of(deployment["id"])[1]
    fake_runner.remove_replica(victim.container_id)
    converge(reconciler, lambda: len(fake_runner.of(deployment["id"])) == 2)
    [missing] = api.events(deployment["id"], event_type="container_missing")
    assert missing["data"]["replica"] == 1
    assert {c.index for c in fake_runner.of(deployment["id"])} == {0, 1}


def test_never_healthy_fails_after_the_progress_deadline(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(
        app, api, health_check={"path": "/health", "interval_seconds": 0.2, "timeout_seconds": 0.2, "retries": 1}
    )
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "failed"), timeout=FAST.progress_deadline + 5)
    body = api.deployment(deployment["id"])
    assert "did not become ready" in body["error"]
    assert api.events(deployment["id"], event_type="health_failed")
    assert fake_runner.of(deployment["id"]) == []


def test_missing_image_fails_with_a_clear_event(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api, image="deploy-test/nope:latest")
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    assert api.events(deployment["id"], event_type="image_unavailable")
    assert "nope" in api.deployment(deployment["id"])["error"]


def test_git_source_is_built_with_progress_and_build_log(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api, image=None, source={"git_url": "https://git.example.com/acme/agent.git"})
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert deployment["image"] == f"deploy-service/agent-{agent['id']}:{deployment['id'][:8]}-r1"
    steps = [e["data"] for e in reversed(api.events(deployment["id"], event_type="build_progress"))]
    assert steps == [{"step": 1, "total": 2}, {"step": 2, "total": 2}]
    lines = api.get(f"/v1/deployments/{deployment['id']}/logs?source=build").get_json()["lines"]
    assert [line["line"] for line in lines] == fake_runner.build_lines
    assert all(line["stream"] == "build" and line["timestamp"] for line in lines)


def test_orphans_are_removed_and_restarted_service_adopts(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    from deploy_service.runner.base import ReplicaSpec

    fake_runner.start_replica(
        ReplicaSpec(
            deployment_id="gone", agent_id="x", index=0, generation=1, image="deploy-test/http-agent:latest", port=1
        )
    )
    ids = {c.container_id for c in fake_runner.of(deployment["id"])}
    restarted = Reconciler(app, runner=fake_runner, settings=FAST)
    try:
        restarted.run_once()
    finally:
        restarted.close()
    assert fake_runner.of("gone") == []
    assert {c.container_id for c in fake_runner.of(deployment["id"])} == ids


def test_engine_down_pass_changes_nothing(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    from deploy_service.errors import EngineUnavailable

    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    fake_runner.down = True
    with pytest.raises(EngineUnavailable):
        reconciler.run_once()
    assert api.deployment(deployment["id"])["status"] == "ready"


def test_events_filters_and_paging(app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    page = api.get(f"/v1/deployments/{deployment['id']}/events?limit=2").get_json()
    assert page["deployment_id"] == deployment["id"] and page["deployment_status"] == "ready"
    assert len(page["items"]) == 2 and page["total"] > 2 and page["limit"] == 2
    everything = api.events(deployment["id"])
    times = [event["created_at"] for event in everything]
    assert times == sorted(times, reverse=True)
    assert page["items"] == everything[:2]
    started = api.events(deployment["id"], event_type="container_started")
    assert len(started) == 2
    in_ready = {event["event_type"] for event in api.events(deployment["id"], status="ready")}
    assert in_ready == {"status_changed", "rollout_completed"}  # becoming ready activates release 1
    assert_error(api.get(f"/v1/deployments/{deployment['id']}/events?status=bogus"), 400, "validation_error")


def test_events_total_is_the_exact_count_of_every_event_recorded(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    """The unfiltered `total` is a counter kept beside the events: it must equal a real count."""
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.delete(f"/v1/deployments/{deployment['id']}").status_code == 200

    with app.app_context():
        counted = db.session.scalar(
            select(func.count()).select_from(DeploymentEvent).where(DeploymentEvent.deployment_id == deployment["id"])
        )
    page = api.get(f"/v1/deployments/{deployment['id']}/events?limit=1").get_json()
    assert counted > 5 and page["total"] == counted
    filtered = api.get(f"/v1/deployments/{deployment['id']}/events?event_type=container_started").get_json()
    assert filtered["total"] == len(filtered["items"]) >= 2
    past_the_end = api.get(f"/v1/deployments/{deployment['id']}/events?skip={counted}").get_json()
    assert past_the_end["items"] == [] and past_the_end["total"] == counted


def test_runtime_logs_merge_replicas(app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    first, second = fake_runner.of(deployment["id"])
    fake_runner.say(first.container_id, "hello from 0")
    fake_runner.say(second.container_id, "oops from 1", stream="stderr")
    fake_runner.say(first.container_id, "bye from 0")
    lines = api.get(f"/v1/deployments/{deployment['id']}/logs").get_json()["lines"]
    assert [(line["replica"], line["stream"], line["line"]) for line in lines] == [
        (0, "stdout", "hello from 0"),
        (1, "stderr", "oops from 1"),
        (0, "stdout", "bye from 0"),
    ]
    assert [
        line["line"] for line in api.get(f"/v1/deployments/{deployment['id']}/logs?replica=1").get_json()["lines"]
    ] == ["oops from 1"]
    assert len(api.get(f"/v1/deployments/{deployment['id']}/logs?tail=1").get_json()["lines"]) == 1


def test_results_by_owner(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    text = api.post(f"/v1/deployments/{deployment['id']}/results", {"results": "report text"})
    assert text.status_code == 201
    obj = api.post(f"/v1/deployments/{deployment['id']}/results", {"results": {"score": 0.9}})
    assert obj.get_json()["results"] == {"score": 0.9}
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/results", {"results": 5}), 400, "validation_error")
    assert_error(api.post(f"/v1/deployments/{deployment['id']}/results", {}), 400, "validation_error")
    for nul in ("a\x00", {"deep": [{"k": "v\x00"}]}, {"ke\x00y": 1}):
        refused = assert_error(
            api.post(f"/v1/deployments/{deployment['id']}/results", {"results": nul}), 400, "validation_error"
        )
        assert refused["details"] == {"results": ["Must not contain NUL characters."]}
    listing = api.get(f"/v1/deployments/{deployment['id']}/results").get_json()
    assert [item["results"] for item in listing["items"]] == [{"score": 0.9}, "report text"]
    assert len(api.events(deployment["id"], event_type="result_added")) == 2


RESULTS_ACCEPTED: list[Any] = ["report text", {}, {"score": 0.9, "tags": ["a", {"deep": [[None, True, 1.5]]}]}]
RESULTS_REFUSED: list[Any] = [5, None, ["a"], "a\x00", {"deep": [{"k": "v\x00"}]}, {"ke\x00y": 1}, {"a": {"b\x00": 1}}]


@pytest.mark.parametrize("component", ["ResultCreate", "Result"])
def test_the_spec_of_results_takes_what_the_service_takes(
    app: Flask, api: Api, fake_runner: FakeRunner, component: str
) -> None:
    """The recursive no-NUL rule the generators do not see holds for the validator the fuzzer uses."""
    spec = api.get("/openapi.json").get_json()
    results = jsonschema_rs.Draft202012Validator(
        {**spec, "$ref": f"#/components/schemas/{component}/properties/results"}
    )
    deployment = deploy(api, new_agent(app, api)["id"])
    for value in RESULTS_ACCEPTED:
        assert results.is_valid(value), value
        assert api.post(f"/v1/deployments/{deployment['id']}/results", {"results": value}).status_code == 201
    for value in RESULTS_REFUSED:
        assert not results.is_valid(value), value
        response = api.post(f"/v1/deployments/{deployment['id']}/results", {"results": value})
        assert_error(response, 400, "validation_error")


def test_list_deployments_filters(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    one, two = new_agent(app, api), new_agent(app, api)
    first, second = deploy(api, one["id"]), deploy(api, two["id"])
    api.delete(f"/v1/deployments/{first['id']}")
    listing = api.get("/v1/deployments").get_json()
    assert [item["id"] for item in listing["items"]] == [second["id"], first["id"]]
    assert [i["id"] for i in api.get(f"/v1/deployments?agent_id={one['id']}").get_json()["items"]] == [first["id"]]
    assert [i["id"] for i in api.get("/v1/deployments?status=killed").get_json()["items"]] == [first["id"]]
    assert_error(api.get("/v1/deployments?status=nope"), 400, "validation_error")
