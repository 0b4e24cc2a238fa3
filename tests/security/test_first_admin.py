"""Registration and the first admin: never in production, and never two, however close the first registrations come.

The attack: on a fresh service, register several accounts at the same instant (from several workers), so
that each counts zero users before any has been written and every one of them becomes admin; or, in
production, be the first to register after go-live and take the admin role. What the service does:
in production registration makes plain users only (the admin comes from `flask create-admin`); in
development the first account ever is admin and exactly one registration wins it, on both databases.

Two app instances on the test database (two engines and pools, as two processes), each with several
threads released by one barrier, register at once; each round starts from an empty database.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from deploy_service.extensions import db
from deploy_service.models import User
from deploy_service.settings import Settings
from tests.factories import PASSWORD, make_admin
from tests.helpers import app_instances

ROUNDS = 8
THREADS_PER_INSTANCE = 4


def _empty(app: Flask) -> None:
    with app.app_context():
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()


def _register_at_once(clients: list[FlaskClient], round_number: int) -> list[Any]:
    """Every thread of every instance registers its own account at the same moment; returns the answers."""
    callers = [client for client in clients for _ in range(THREADS_PER_INSTANCE)]
    barrier = threading.Barrier(len(callers))
    answers: list[Any] = [None] * len(callers)

    def run(index: int, client: FlaskClient) -> None:
        email = f"racer{round_number}-{index}@example.com"
        barrier.wait()
        answers[index] = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})

    threads = [threading.Thread(target=run, args=(index, client)) for index, client in enumerate(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def _roles(app: Flask) -> Counter[str]:
    with app.app_context():
        return Counter(db.session.scalars(select(User.role)))


@pytest.mark.parametrize(("environment", "admins"), [("development", 1), ("production", 0)])
def test_concurrent_first_registrations_make_one_admin_in_development_and_none_in_production(
    app: Flask, make_app: Callable[..., Flask], environment: str, admins: int
) -> None:
    clients = app_instances(make_app, ENVIRONMENT=environment)
    callers = 2 * THREADS_PER_INSTANCE
    for number in range(ROUNDS):
        _empty(app)
        answers = _register_at_once(clients, number)
        assert [answer.status_code for answer in answers] == [201] * callers, [a.get_json() for a in answers]
        assert Counter(answer.get_json()["role"] for answer in answers) == Counter(
            admin=admins, developer=callers - admins
        )
        assert _roles(app) == Counter(admin=admins, developer=callers - admins)


def test_in_production_the_first_registration_is_a_plain_user(
    client: FlaskClient, configure: Callable[..., Settings]
) -> None:
    configure(ENVIRONMENT="production")
    first = client.post("/v1/auth/register", json={"email": "early@example.com", "password": PASSWORD})
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["role"] == "developer"


def test_an_account_made_by_create_admin_is_the_first_one(app: Flask, client: FlaskClient) -> None:
    make_admin(app)
    later = client.post("/v1/auth/register", json={"email": "later@example.com", "password": PASSWORD})
    assert later.status_code == 201 and later.get_json()["role"] == "developer"


def test_an_account_registered_in_production_stays_the_first_one(
    client: FlaskClient, configure: Callable[..., Settings]
) -> None:
    configure(ENVIRONMENT="production")
    assert client.post("/v1/auth/register", json={"email": "one@example.com", "password": PASSWORD}).status_code == 201
    configure(ENVIRONMENT="development")
    second = client.post("/v1/auth/register", json={"email": "two@example.com", "password": PASSWORD})
    assert second.status_code == 201 and second.get_json()["role"] == "developer"
