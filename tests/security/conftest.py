"""Fixtures of the attack matrix: a victim with one of every resource, a stranger, and how to ask.

The victim owns two agents, each deployed on the in-memory runner (no containers), a secret, a
webhook, an alert, an API key per agent and an evaluation. The stranger is another ordinary user.
`Victim.snapshot()` reads everything the victim owns through the API, so a test can show that an
attacker's requests changed nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from deploy_service.extensions import db
from deploy_service.models import Alert, Deployment, Release, ReleaseReason, ReleaseStatus, User
from deploy_service.models.types import utcnow
from deploy_service.services import api_keys as key_service
from deploy_service.services import evaluations as evaluation_service
from deploy_service.services import personal_tokens as token_service
from deploy_service.services import webhooks as webhook_service
from deploy_service.settings import Settings
from tests.factories import AuthActions, UserRef, make_agent, make_deployment, make_secret
from tests.fakes import FakeRunner
from tests.helpers import assert_error
from tests.security.routes import ADMIN, Probe

__all__ = ["assert_error"]  # still importable from here


@dataclass
class Victim:
    user: UserRef
    headers: dict[str, str]
    ids: dict[str, str]
    """Placeholder name → the victim's resource id (agent_id, deployment_id, ...)."""
    second: dict[str, str]
    """The same for the victim's second agent: agent_id, deployment_id, key_id."""
    keys: dict[str, str]
    """Agent id → the plain API key of that agent (all scopes)."""
    client: FlaskClient

    def snapshot(self) -> dict[str, Any]:
        """Everything the victim owns, as the victim sees it through the API."""
        agent, deployment = self.ids["agent_id"], self.ids["deployment_id"]
        paths = {
            "agents": "/v1/agents?limit=200",
            "deployments": "/v1/deployments?limit=200",
            "keys": f"/v1/agents/{agent}/api-keys",
            "keys2": f"/v1/agents/{self.second['agent_id']}/api-keys",
            "secrets": "/v1/secrets",
            "webhooks": "/v1/webhooks",
            "alerts": "/v1/alerts",
            "evaluations": "/v1/evaluations",
            "results": f"/v1/deployments/{deployment}/results",
            "events": f"/v1/deployments/{deployment}/events?limit=200",
            "releases": f"/v1/deployments/{deployment}/releases",
            "tokens": "/v1/auth/api-keys",
            "secret": f"/v1/secrets/{self.ids['secret_id']}",
        }
        state: dict[str, Any] = {}
        for name, path in paths.items():
            response = self.client.get(path, headers=self.headers)
            assert response.status_code == 200, (path, response.get_json())
            state[name] = response.get_json()
        for key in state["keys"]["items"] + state["keys2"]["items"] + state["tokens"]["items"]:
            key.pop("last_used_at")  # a key's own use is not a change of state
        return state


@dataclass
class World:
    app: Flask
    client: FlaskClient
    victim: Victim
    stranger: UserRef
    stranger_headers: dict[str, str]
    auth: AuthActions
    admin_headers: dict[str, str]
    """An admin's (not the victim's): the user routes (`ADMIN` probes) are an admin's to call."""

    def headers_for(self, probe: Probe) -> dict[str, str]:
        """Who calls `probe` as its rightful caller: an admin for the user routes, else the victim."""
        return self.admin_headers if probe.access == ADMIN else self.victim.headers

    def request(self, probe: Probe, ids: dict[str, str], headers: dict[str, str] | None = None) -> TestResponse:
        """Send `probe` with `ids` filled in."""
        url, body = probe.render(ids)
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if body is not None:
            kwargs["json"] = body
        return self.client.open(url, method=probe.method, **kwargs)


def arranged_ids(world: World, probe: Probe) -> dict[str, str]:
    """The victim's ids, with the state `probe.tags` ask for arranged, so the owner's request can succeed.

    `idle_agent`: a new agent of the victim's with no deployment stands in for `agent_id` (deploy,
    delete); `ready`: the victim's deployment is marked ready, as the reconciler would (restart, scale).
    """
    arranged = dict(world.victim.ids)
    if "idle_agent" in probe.tags:
        arranged["agent_id"] = make_agent(world.app, world.victim.user)["id"]
    if "ready" in probe.tags:
        with world.app.app_context():
            deployment = db.session.get(Deployment, arranged["deployment_id"])
            assert deployment is not None
            deployment.status = "ready"
            db.session.commit()
    if "second_release" in probe.tags:
        _second_release(world.app, arranged["deployment_id"])
    return arranged


def _second_release(app: Flask, deployment_id: str) -> None:
    """Release 1 was active and release 2 replaced it, as a restart with a change would have left them."""
    with app.app_context():
        deployment = db.session.get(Deployment, deployment_id)
        first = db.session.scalar(select(Release).where(Release.deployment_id == deployment_id))
        assert deployment is not None and first is not None
        first.status, first.activated_at, first.ended_at = ReleaseStatus.SUPERSEDED, utcnow(), utcnow()
        db.session.add(
            Release(
                deployment_id=deployment_id,
                number=2,
                status=ReleaseStatus.ACTIVE,
                reason=ReleaseReason.RESTART,
                image=first.image,
                config=first.config,
                activated_at=utcnow(),
            )
        )
        deployment.revision = 2
        db.session.commit()


def missing_ids(probe: Probe) -> dict[str, str]:
    """Fresh ids for every placeholder of `probe`: resources that do not exist."""
    return {name: str(uuid.uuid4()) for name in probe.placeholders()}


def _alert(app: Flask, owner: UserRef, agent_id: str, deployment_id: str) -> str:
    with app.app_context():
        alert = Alert(
            deployment_id=deployment_id,
            agent_id=agent_id,
            owner_id=owner.id,
            severity="critical",
            kind="deployment_failed",
            message="it failed",
        )
        db.session.add(alert)
        db.session.commit()
        return alert.id


def _deployed_agent(app: Flask, owner: UserRef) -> dict[str, str]:
    agent = make_agent(app, owner)
    deployment = make_deployment(app, owner, agent["id"])
    with app.app_context():
        actor = db.session.get(User, owner.id)
        row, key = key_service.create_key(actor, agent["id"], name="k")
        return {"agent_id": agent["id"], "deployment_id": deployment["id"], "key_id": row.id, "key": key}


@pytest.fixture()
def world(
    app: Flask,
    client: FlaskClient,
    auth: AuthActions,
    fake_runner: FakeRunner,
    configure: Callable[..., Settings],
) -> World:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True)
    owner, owner_headers = auth.user()
    first = _deployed_agent(app, owner)
    second = _deployed_agent(app, owner)
    secret = make_secret(app, owner, name="victim-secret", value="victim-value")
    with app.app_context():
        actor = db.session.get(User, owner.id)
        webhook, _ = webhook_service.create_webhook(actor, url="http://127.0.0.1:9/hook", severities=None, kinds=None)
        webhook_id = webhook.id
        evaluation_service.record(actor, {"agent_id": first["agent_id"], "prompt": "p", "response": "r"})
        token, _ = token_service.create_token(actor, name="victim-token")
        token_id = token.id
    ids = {
        "user_id": owner.id,
        "agent_id": first["agent_id"],
        "deployment_id": first["deployment_id"],
        "key_id": first["key_id"],
        "secret_id": secret["id"],
        "webhook_id": webhook_id,
        "alert_id": _alert(app, owner, first["agent_id"], first["deployment_id"]),
        "token_id": token_id,
    }
    victim = Victim(
        user=owner,
        headers=owner_headers,
        ids=ids,
        second={name: second[name] for name in ("agent_id", "deployment_id", "key_id")},
        keys={first["agent_id"]: first["key"], second["agent_id"]: second["key"]},
        client=client,
    )
    stranger, stranger_headers = auth.user()
    _admin, admin_headers = auth.admin()
    return World(app, client, victim, stranger, stranger_headers, auth, admin_headers)
