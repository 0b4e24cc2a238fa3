"""Two concurrent scale/restart calls on one deployment: no lost update, and the loser tries again.

Two app instances on the test database (two engines, two connection pools: as two processes) take
turns in rounds; in each round two threads pass a barrier and call scale or restart on the same
deployment at the same moment. A deployment row carries an optimistic `version`: each call reads the
deployment, then writes `UPDATE … WHERE version = <what it read>`; when both read the same version, the
second update matches no row, that call is rolled back whole (its event too) and decided again from a
fresh read (`services.deployments.on_fresh_state`); only a call that keeps losing answers 409
`conflict`. Runs on both databases.

What a user would notice, and what is asserted: every answer is 202 or 409 `conflict` (never a 500);
each round has a winner; the events tell one consistent story (every `scaled` event starts from the
count the previous one ended at, one `restart_requested` per generation), with exactly one event per
202; the final replica count, generation and version are those the winners' calls imply; and the calls
really overlapped (some lost a race and were tried again). No reconciler runs (the deployment stays
`ready`) and the engine is the in-memory runner: this is about the database.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentEvent
from tests.factories import AuthActions, make_agent, make_user
from tests.helpers import app_instances

ROUNDS = 30


def test_concurrent_scale_and_restart_never_lose_an_update(
    app: Flask, make_app: Callable[..., Flask], auth: AuthActions, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="deploy_service.services.deployments")
    owner = make_user(app)
    agent = make_agent(app, owner)
    headers = auth.headers(owner)
    clients = app_instances(make_app)
    deployed = clients[0].post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={"replicas": 1})
    assert deployed.status_code == 202, deployed.get_json()
    deployment_id = deployed.get_json()["id"]
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        deployment.status = "ready"  # as the reconciler would have it
        db.session.commit()
        start_version, start_generation = deployment.version, deployment.generation

    def call(client: FlaskClient, action: tuple[str, int]) -> Any:
        kind, replicas = action
        if kind == "scale":
            return client.post(f"/v1/deployments/{deployment_id}/scale", headers=headers, json={"replicas": replicas})
        return client.post(f"/v1/deployments/{deployment_id}/restart", headers=headers)

    outcomes: Counter[tuple[str, int]] = Counter()
    for number in range(ROUNDS):
        pairs = [
            (("scale", 2 + number % 5), ("scale", 7 + number % 5)),
            (("scale", 2 + number % 5), ("restart", 0)),
            (("restart", 0), ("restart", 0)),
        ]
        actions = pairs[number % 3]
        barrier = threading.Barrier(2)
        answers: list[Any] = [None, None]

        def run(
            slot: int, actions: Any = actions, barrier: threading.Barrier = barrier, answers: Any = answers
        ) -> None:
            barrier.wait(timeout=10)
            answers[slot] = call(clients[slot], actions[slot])

        threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        statuses = [answer.status_code for answer in answers]
        assert set(statuses) <= {202, 409}, [answer.get_json() for answer in answers]
        assert 202 in statuses, [answer.get_json() for answer in answers]
        for action, answer in zip(actions, answers, strict=True):
            if answer.status_code == 409:
                body = answer.get_json()
                assert body["success"] is False and body["error"] == "conflict", body
                assert body["details"] == {"deployment_id": deployment_id}
            outcomes[(action[0], answer.status_code)] += 1

    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        events = db.session.scalars(
            select(DeploymentEvent)
            .where(DeploymentEvent.deployment_id == deployment_id)
            .order_by(DeploymentEvent.created_at, DeploymentEvent.id)
        ).all()
        scaled = [event.data for event in events if event.event_type == "scaled"]
        restarts = [event.data for event in events if event.event_type == "restart_requested"]
        final = (deployment.replicas_desired, deployment.generation, deployment.version)
        db.session.rollback()

    assert len(scaled) == outcomes[("scale", 202)]
    assert len(restarts) == outcomes[("restart", 202)]
    previous = 1
    for step in scaled:  # a lost update would show as two steps starting from the same count
        assert step["from"] == previous, scaled
        previous = step["to"]
    assert sorted(r["generation"] for r in restarts) == list(range(start_generation + 1, final[1] + 1))
    wins = outcomes[("scale", 202)] + outcomes[("restart", 202)]
    assert final == (previous, start_generation + outcomes[("restart", 202)], start_version + wins)
    retried = sum("lost a race" in record.getMessage() for record in caplog.records)
    assert retried > 0, outcomes  # the calls really overlapped
    print(f"{ROUNDS} rounds: {dict(outcomes)}, {retried} races lost and tried again")
