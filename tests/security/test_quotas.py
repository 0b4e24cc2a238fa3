"""Quotas under attack: racing for the last slot, and going around the quota by another route.

The attack: a user at the edge of a quota sends many requests at the same instant, from several workers,
so that each counts the usage before any has written and all of them pass (eight deployments where one
was left; eight agents where one was left). Or they reach the same resources by another route: the
agent-centric deploy, a restart after raising the agent's memory, a scale. What the service does: the
quota is decided inside each request's transaction, with the owner's row locked first
(`services.quotas`), so the decisions of one user are taken one after the other: exactly one wins the
last slot and the others answer 403 `quota_exceeded`, on both databases; every route that grows usage
asks the same rule (tests/api/test_quotas.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import Agent, Deployment, DeploymentStatus
from tests.factories import AuthActions, agent_payload, make_agent
from tests.helpers import app_instances

ROUNDS = 4
THREADS_PER_INSTANCE = 4


def _at_once(clients: list[FlaskClient], path: str, headers: dict[str, str], bodies: list[Any]) -> list[Any]:
    """POST `bodies[i]` to `path` from caller i, every caller of every instance at the same moment."""
    callers = [client for client in clients for _ in range(THREADS_PER_INSTANCE)]
    assert len(bodies) == len(callers)
    barrier = threading.Barrier(len(callers))
    answers: list[Any] = [None] * len(callers)

    def run(index: int, client: FlaskClient) -> None:
        barrier.wait()
        answers[index] = client.post(path, headers=headers, json=bodies[index])

    threads = [threading.Thread(target=run, args=(index, client)) for index, client in enumerate(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def _statuses(answers: list[Any]) -> Counter[int]:
    return Counter(answer.status_code for answer in answers)


def test_concurrent_deploys_cannot_both_take_the_last_replica(
    app: Flask, make_app: Callable[..., Flask], auth: AuthActions
) -> None:
    clients = app_instances(make_app, QUOTA_REPLICAS=2)
    callers = 2 * THREADS_PER_INSTANCE
    for _ in range(ROUNDS):
        owner, headers = auth.user()
        running = make_agent(app, owner)["id"]
        assert clients[0].post(f"/v1/agents/{running}/deploy", headers=headers, json={}).status_code == 202
        bodies = [{"agent_id": make_agent(app, owner)["id"]} for _ in range(callers)]
        answers = _at_once(clients, "/v1/deployments", headers, bodies)
        assert _statuses(answers) == Counter({202: 1, 403: callers - 1}), [a.get_json() for a in answers]
        assert {a.get_json()["error"] for a in answers if a.status_code == 403} == {"quota_exceeded"}
        with app.app_context():
            live = db.session.scalar(
                select(func.sum(Deployment.replicas_desired)).where(
                    Deployment.owner_id == owner.id, Deployment.status != DeploymentStatus.KILLED
                )
            )
        assert live == 2


def test_concurrent_agent_creations_cannot_both_take_the_last_agent(
    app: Flask, make_app: Callable[..., Flask], auth: AuthActions
) -> None:
    clients = app_instances(make_app, QUOTA_AGENTS=3)
    callers = 2 * THREADS_PER_INSTANCE
    for _ in range(ROUNDS):
        owner, headers = auth.user()
        make_agent(app, owner)
        make_agent(app, owner)
        answers = _at_once(clients, "/v1/agents", headers, [agent_payload() for _ in range(callers)])
        assert _statuses(answers) == Counter({201: 1, 403: callers - 1}), [a.get_json() for a in answers]
        with app.app_context():
            owned = db.session.scalar(select(func.count()).select_from(Agent).where(Agent.owner_id == owner.id))
        assert owned == 3
