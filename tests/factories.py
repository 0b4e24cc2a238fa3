"""Factories for test data and the auth helper.

Factories write through the services (so data is made the way users make it) and return plain
snapshots, never live ORM objects, so tests don't share a session with the requests they make.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from deploy_service.models import ROLE_ADMIN, ROLE_DEVELOPER, User
from deploy_service.services import agents as agent_service
from deploy_service.services import secrets as secret_service
from deploy_service.services.auth import create_user

PASSWORD = "correct-horse-battery"
_counter = itertools.count(1)


@dataclass(frozen=True)
class UserRef:
    id: str
    email: str
    role: str
    password: str = PASSWORD


def make_user(app: Flask, *, role: str = ROLE_DEVELOPER, email: str | None = None, password: str = PASSWORD) -> UserRef:
    email = email or f"user{next(_counter)}@example.com"
    with app.app_context():
        user = create_user(email=email, password=password, full_name="Test User", role=role)
        return UserRef(user.id, user.email, user.role, password)


def make_admin(app: Flask, **kwargs: Any) -> UserRef:
    return make_user(app, role=ROLE_ADMIN, **kwargs)


def agent_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"name": f"agent-{next(_counter)}", "image": "deploy-test/http-agent:latest"}
    payload.update(overrides)
    return payload


def make_agent(app: Flask, owner: UserRef, **overrides: Any) -> dict[str, Any]:
    """Create an agent for `owner`; returns its id and name."""
    with app.app_context():
        from deploy_service.extensions import db

        actor = db.session.get(User, owner.id)
        agent = agent_service.create_agent(actor, agent_payload(**overrides))
        return {"id": agent.id, "name": agent.name, "owner_id": agent.owner_id}


def make_secret(app: Flask, owner: UserRef, name: str = "api-token", value: str = "s3cr3t-value") -> dict[str, Any]:
    with app.app_context():
        from deploy_service.extensions import db

        actor = db.session.get(User, owner.id)
        secret = secret_service.create_secret(actor, name=name, value=value)
        return {"id": secret.id, "name": secret.name}


class AuthActions:
    """Log users in through the API and hand back request headers."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client

    def login(self, user: UserRef) -> dict[str, Any]:
        response = self.client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
        assert response.status_code == 200, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    def headers(self, user: UserRef) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.login(user)['access_token']}"}

    def user(self, **kwargs: Any) -> tuple[UserRef, dict[str, str]]:
        """A new user and its auth headers."""
        user = make_user(self.app, **kwargs)
        return user, self.headers(user)

    def admin(self) -> tuple[UserRef, dict[str, str]]:
        user = make_admin(self.app)
        return user, self.headers(user)


def make_deployment(app: Flask, owner: UserRef, agent_id: str, *, replicas: int = 1) -> dict[str, Any]:
    """Deploy an agent through the service (needs the `fake_runner` fixture or a real engine)."""
    from deploy_service.extensions import db
    from deploy_service.services.deployments import create_deployment

    with app.app_context():
        actor = db.session.get(User, owner.id)
        deployment = create_deployment(actor, agent_id, replicas=replicas)
        return {"id": deployment.id, "agent_id": agent_id, "status": deployment.status}
