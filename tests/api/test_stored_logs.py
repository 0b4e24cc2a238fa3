"""Logs that outlive containers, on the in-memory runner: every removal path keeps the last lines.

A crash's restart, a rolling update, a scale down, a stop and a delete each remove containers; their
last `LOG_KEEP_LINES_PER_REPLICA` lines are then served by `GET /logs` (merged with live ones), and
`previous=true&replica=N` gives replica N's previous container. A read that breaks never blocks the
removal; retention deletes old rows. The real engine shows the same in tests/integration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update

from deploy_service.extensions import db
from deploy_service.models import ReplicaLog
from deploy_service.models.types import utcnow
from deploy_service.reconciler import Reconciler
from deploy_service.reconciler.jobs import PruneLogsJob
from deploy_service.runner.base import LogLine
from deploy_service.services import alerts
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from deploy_service.settings import Settings
from tests.api.test_logs import server_sent_events
from tests.api.test_swarm_reconciler import FakeSwarm
from tests.factories import AuthActions
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, assert_error, converge, deploy, new_agent

KEEP = 3
SETTINGS = replace(FAST, log_keep_lines=KEEP)


@pytest.fixture()
def reconciler(app: Flask, fake_runner: FakeRunner) -> Iterator[Reconciler]:
    reconciler = Reconciler(app, runner=fake_runner, settings=SETTINGS)
    yield reconciler
    reconciler.close()


def ready(app: Flask, api: Api, reconciler: Reconciler, *, replicas: int = 1) -> str:
    deployment_id = str(deploy(api, new_agent(app, api)["id"], replicas=replicas)["id"])
    converge(reconciler, api.status_is(deployment_id, "ready"))
    return deployment_id


def lines(api: Api, deployment_id: str, query: str = "") -> list[str]:
    response = api.get(f"/v1/deployments/{deployment_id}/logs?{query}")
    assert response.status_code == 200, response.get_json()
    return [f"{line['replica']}:{line['line']}" for line in response.get_json()["lines"]]


def stored_rows(app: Flask) -> list[tuple[str, int, int]]:
    """(container id, replica, generation) of each stored row."""
    with app.app_context():
        rows = db.session.scalars(select(ReplicaLog).order_by(ReplicaLog.replica)).all()
        return [(row.container_id, row.replica, row.generation) for row in rows]


def say(fake_runner: FakeRunner, container_id: str, *words: str) -> None:
    for word in words:
        fake_runner.say(container_id, word)


def test_a_crashed_containers_last_lines_are_served_and_are_the_replicas_previous(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler)
    [first] = fake_runner.of(deployment_id)
    say(fake_runner, first.container_id, "one", "two", "three", "four", "dying")
    fake_runner.crash(first.container_id)
    converge(
        reconciler, lambda: [r.container_id for r in fake_runner.of(deployment_id)] not in ([], [first.container_id])
    )
    [second] = fake_runner.of(deployment_id)
    say(fake_runner, second.container_id, "back")

    assert lines(api, deployment_id) == ["0:two", "0:three", "0:four", "0:dying", "0:back"][-KEEP - 1 :]
    assert lines(api, deployment_id, "previous=true&replica=0") == ["0:three", "0:four", "0:dying"]
    assert lines(api, deployment_id, "previous=true&replica=0&tail=1") == ["0:dying"]


def test_a_rolling_update_keeps_the_replaced_containers_lines(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler)
    [old] = fake_runner.of(deployment_id)
    say(fake_runner, old.container_id, "old generation")
    assert api.post(f"/v1/deployments/{deployment_id}/restart").status_code == 202
    converge(reconciler, lambda: {r.generation for r in fake_runner.of(deployment_id)} == {2})
    converge(reconciler, api.status_is(deployment_id, "ready"))
    [new] = fake_runner.of(deployment_id)
    say(fake_runner, new.container_id, "new generation")

    assert lines(api, deployment_id) == ["0:old generation", "0:new generation"]
    assert lines(api, deployment_id, "previous=true&replica=0") == ["0:old generation"]
    assert stored_rows(app) == [(old.container_id, 0, 1)]


def test_a_scale_down_merges_the_removed_replicas_lines_with_the_live_ones(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler, replicas=2)
    zero, one = fake_runner.of(deployment_id)
    fake_runner.say(zero.container_id, "zero before")
    fake_runner.say(one.container_id, "one before")
    assert api.post(f"/v1/deployments/{deployment_id}/scale", {"replicas": 1}).status_code == 202
    converge(reconciler, lambda: len(fake_runner.of(deployment_id)) == 1)
    fake_runner.say(zero.container_id, "zero after")

    assert lines(api, deployment_id) == ["0:zero before", "1:one before", "0:zero after"]
    assert lines(api, deployment_id, "replica=1") == ["1:one before"]
    assert lines(api, deployment_id, "tail=2") == ["1:one before", "0:zero after"]


def test_a_stop_keeps_the_last_words_said_while_stopping(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler)
    [replica] = fake_runner.of(deployment_id)
    fake_runner.say(replica.container_id, "working")
    fake_runner.on_stop = "SIGTERM received, bye"
    assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment_id, "stopped"))

    assert fake_runner.of(deployment_id) == []
    assert lines(api, deployment_id) == ["0:working", "0:SIGTERM received, bye"]
    assert lines(api, deployment_id, "previous=true&replica=0") == ["0:working", "0:SIGTERM received, bye"]


def test_a_deleted_deployments_lines_are_served_after_its_containers_are_gone(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler, replicas=2)
    for replica in fake_runner.of(deployment_id):
        fake_runner.say(replica.container_id, f"replica {replica.index} here")
    assert api.delete(f"/v1/deployments/{deployment_id}").status_code == 200
    converge(reconciler, lambda: fake_runner.of(deployment_id) == [])

    assert api.deployment(deployment_id)["status"] == "killed"
    assert sorted(lines(api, deployment_id)) == ["0:replica 0 here", "1:replica 1 here"]
    assert lines(api, deployment_id, "previous=true&replica=1") == ["1:replica 1 here"]


def test_a_deleted_deployments_lines_are_committed_before_its_containers_are_removed(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An orphan's lines are stored in a transaction of their own before it goes: a reader that sees the
    container gone sees its lines (and a crash right after the removal loses none)."""
    deployment_id = ready(app, api, reconciler, replicas=2)
    for replica in fake_runner.of(deployment_id):
        fake_runner.say(replica.container_id, f"replica {replica.index} here")
    seen_at_removal: dict[str, list[tuple[str, int, int]]] = {}
    remove = fake_runner.remove_replica

    def remove_and_look(container: str, *, stop_timeout: float = 10.0) -> None:
        seen_at_removal[container] = stored_rows(app)  # another session: committed rows only
        remove(container, stop_timeout=stop_timeout)

    monkeypatch.setattr(fake_runner, "remove_replica", remove_and_look)
    containers = {replica.container_id for replica in fake_runner.of(deployment_id)}
    assert api.delete(f"/v1/deployments/{deployment_id}").status_code == 200
    converge(reconciler, lambda: fake_runner.of(deployment_id) == [])

    assert set(seen_at_removal) == containers
    for rows in seen_at_removal.values():
        assert {row[0] for row in rows} == containers


def test_lines_read_in_a_run_that_fails_are_stored_after_its_rollback(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop's lines join its deployment's transaction; when that transaction is rolled back (here the
    alert rules fail once) the container is gone already, and its lines are stored on their own."""
    deployment_id = ready(app, api, reconciler)
    [replica] = fake_runner.of(deployment_id)
    fake_runner.say(replica.container_id, "still here")
    evaluate = alerts.evaluate_state
    failed: list[str] = []

    def fail_once(*args: object, **kwargs: object) -> None:
        if not failed:
            failed.append("once")
            raise RuntimeError("the alert rules failed")
        evaluate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(alerts, "evaluate_state", fail_once)
    assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
    converge(reconciler, lambda: bool(failed))

    assert fake_runner.of(deployment_id) == []
    assert [row[0] for row in stored_rows(app)] == [replica.container_id]
    converge(reconciler, api.status_is(deployment_id, "stopped"))
    assert lines(api, deployment_id) == ["0:still here"]


def test_a_read_that_breaks_never_blocks_the_removal_and_what_was_read_is_kept(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, caplog: pytest.LogCaptureFixture
) -> None:
    deployment_id = ready(app, api, reconciler)
    [replica] = fake_runner.of(deployment_id)
    say(fake_runner, replica.container_id, "kept", "lost")
    fake_runner.logs_fail_after = 1
    assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
    with caplog.at_level(logging.WARNING, logger="deploy_service.reconciler.drivers"):
        converge(reconciler, api.status_is(deployment_id, "stopped"))

    assert fake_runner.of(deployment_id) == []
    assert "could not read the logs of" in caplog.text
    fake_runner.logs_fail_after = None
    assert lines(api, deployment_id) == ["0:kept"]


def test_previous_needs_a_replica_and_a_stored_container(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler)
    base = f"/v1/deployments/{deployment_id}/logs"
    assert_error(api.get(f"{base}?previous=true"), 400, "validation_error")
    assert_error(api.get(f"{base}?previous=true&replica=0&follow=true"), 400, "validation_error")
    assert_error(api.get(f"{base}?previous=true&replica=0&source=build"), 400, "validation_error")
    body = assert_error(api.get(f"{base}?previous=true&replica=0"), 404, "not_found")
    assert body["details"] == {"replica": 0}


def test_stored_lines_are_the_owners_only(
    app: Flask, api: Api, auth: AuthActions, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler)
    [replica] = fake_runner.of(deployment_id)
    fake_runner.say(replica.container_id, "private")
    assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment_id, "stopped"))
    _, other = auth.user()
    for query in ("", "?previous=true&replica=0"):
        response = api.client.get(f"/v1/deployments/{deployment_id}/logs{query}", headers=other)
        assert_error(response, 404, "not_found")


def test_the_prune_job_deletes_stored_lines_past_their_retention(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler, replicas=2)
    for replica in fake_runner.of(deployment_id):
        fake_runner.say(replica.container_id, f"replica {replica.index}")
    assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment_id, "stopped"))
    old = utcnow() - timedelta(days=SETTINGS.log_retention_days, minutes=1)
    with app.app_context():
        db.session.execute(update(ReplicaLog).where(ReplicaLog.replica == 1).values(stored_at=old))
        db.session.commit()

    job = PruneLogsJob(app, SETTINGS)
    assert job.run() == SETTINGS.log_prune_every
    assert lines(api, deployment_id) == ["0:replica 0"]
    assert 0 < job.run() <= SETTINGS.log_prune_every  # not due again yet


def test_no_lines_are_kept_with_a_keep_of_zero(app: Flask, api: Api, fake_runner: FakeRunner) -> None:
    reconciler = Reconciler(app, runner=fake_runner, settings=replace(FAST, log_keep_lines=0))
    try:
        deployment_id = ready(app, api, reconciler)
        [replica] = fake_runner.of(deployment_id)
        fake_runner.say(replica.container_id, "not kept")
        assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
        converge(reconciler, api.status_is(deployment_id, "stopped"))
    finally:
        reconciler.close()
    assert stored_rows(app) == []
    assert "stop_replica" not in fake_runner.calls


# -- Swarm: the service's tasks' containers are read before the service is removed -------------------


@pytest.fixture()
def swarm(app: Flask) -> Iterator[FakeSwarm]:
    real = app.extensions[RUNNER_KEY]
    fake = FakeSwarm()
    app.extensions[RUNNER_KEY] = fake
    yield fake
    app.extensions[RUNNER_KEY] = real


def test_a_swarm_stop_keeps_the_lines_of_every_task_container_still_there(
    app: Flask, api: Api, swarm: FakeSwarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: dict[str, list[LogLine]] = {}

    def logs(container: str, *, replica: int, tail: int | None = None, **_: object) -> Iterator[LogLine]:
        return iter(said.get(container, [])[-(tail or 0) :] if tail else said.get(container, []))

    monkeypatch.setattr(swarm, "logs", logs)
    reconciler = Reconciler(app, runner=swarm, settings=SETTINGS)
    try:
        deployment_id = ready(app, api, reconciler)
        [crashed] = swarm.services[deployment_id].tasks
        said[str(crashed.container_id)] = [LogLine(utcnow(), 0, "stderr", "panic")]
        swarm.fail_task(deployment_id, 0, restart=True)
        converge(reconciler, lambda: len(api.events(deployment_id, event_type="container_restarted")) == 1)
        restarted = swarm.services[deployment_id].tasks[-1]
        said[str(restarted.container_id)] = [LogLine(utcnow(), 0, "stdout", "up again")]
        assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
        converge(reconciler, api.status_is(deployment_id, "stopped"))
    finally:
        reconciler.close()

    assert swarm.removed == [deployment_id]
    assert lines(api, deployment_id) == ["0:panic", "0:up again"]
    assert lines(api, deployment_id, "previous=true&replica=0") == ["0:up again"]


def test_following_a_deployment_that_ended_starts_with_its_stored_lines(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id = ready(app, api, reconciler)
    [replica] = fake_runner.of(deployment_id)
    say(fake_runner, replica.container_id, "first", "last")
    assert api.post(f"/v1/deployments/{deployment_id}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment_id, "stopped"))

    response = api.client.get(f"/v1/deployments/{deployment_id}/logs?follow=true", headers=api.headers)
    events = server_sent_events(response.get_data(as_text=True))
    assert [f"{data['replica']}:{data['line']}" for name, data in events if name is None] == ["0:first", "0:last"]
    assert events[-1] == ("end", {"status": "stopped"})


def test_following_sends_a_replaced_containers_stored_lines_once_beside_the_live_ones(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, configure: Callable[..., Settings]
) -> None:
    configure(LOG_FOLLOW_MAX_SECONDS=0.2, LOG_FOLLOW_POLL_SECONDS=0.01)
    deployment_id = ready(app, api, reconciler)
    [old] = fake_runner.of(deployment_id)
    fake_runner.say(old.container_id, "before the crash")
    fake_runner.crash(old.container_id)
    converge(
        reconciler, lambda: [r.container_id for r in fake_runner.of(deployment_id)] not in ([], [old.container_id])
    )
    [new] = fake_runner.of(deployment_id)
    fake_runner.say(new.container_id, "after the restart")

    response = api.client.get(f"/v1/deployments/{deployment_id}/logs?follow=true", headers=api.headers)
    events = server_sent_events(response.get_data(as_text=True))
    assert [data["line"] for name, data in events if name is None] == ["before the crash", "after the restart"]
