"""Images an agent may not name: registries on loopback or a private network, and images this service built.

The attacks: (1) name an image on a registry only the engine's host can reach (`localhost:5000/x`,
`10.1.2.3:5000/x`, `[::1]:5000/x`, `127.1/x`), so that the engine, which pulls from inside the operator's
network, probes or pulls from internal services for the user; (2) name `deploy-service/agent-<id>:rN`,
the image the service built from another user's private git source, and run it (its code, and whatever
the build baked in) as one's own agent. What the service does: both are a 400 `validation_error` on
`image` at create and update (the schema's check, `references.check_image_origin`), and a deploy or
restart of an agent stored before the rule is refused the same way. A private registry listed in
`ALLOWED_REGISTRIES` may be named; a built image never (for admins neither: built images are only run
through their git source).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from deploy_service.extensions import db
from deploy_service.models import Agent, Deployment
from deploy_service.settings import Settings
from tests.factories import AuthActions, agent_payload, make_agent
from tests.fakes import FakeRunner
from tests.helpers import assert_error

PRIVATE_REGISTRY_IMAGES = [
    "localhost:5000/x",
    "localhost/x",
    "registry.localhost/x",
    "127.0.0.1/x",
    "127.0.0.1:5000/team/x:1",
    "127.1:5000/x",
    "2130706433:5000/x",
    "0x7f.1:5000/x",
    "10.1.2.3:5000/x",
    "192.168.1.5/x",
    "172.16.0.1/x",
    "169.254.169.254/x",
    "100.64.0.1/x",
    "0.0.0.0:5000/x",
    "[::1]:5000/x",
    "[fd00::1]/x",
    "[::ffff:127.0.0.1]:5000/x",
    "LOCALHOST:5000/x",
]


def _built(agent_id: str) -> list[str]:
    return [
        f"deploy-service/agent-{agent_id}:r1",
        f"deploy-service/agent-{agent_id}",
        f"docker.io/deploy-service/agent-{agent_id}:r2",
        f"index.docker.io/deploy-service/agent-{agent_id}:r1",
        "deploy-service/anything-else:latest",
        f"deploy-service/agent-{agent_id}@sha256:" + "a" * 64,
    ]


def _agents(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Agent)) or 0


@pytest.mark.parametrize("image", PRIVATE_REGISTRY_IMAGES)
def test_an_image_on_a_loopback_or_private_registry_is_refused(
    app: Flask, client: FlaskClient, auth: AuthActions, image: str
) -> None:
    owner, headers = auth.user()
    body = assert_error(
        client.post("/v1/agents", headers=headers, json=agent_payload(image=image)), 400, "validation_error"
    )
    assert "image" in body["details"], body
    assert _agents(app) == 0
    agent = make_agent(app, owner)
    patched = client.patch(f"/v1/agents/{agent['id']}", headers=headers, json={"image": image})
    assert "image" in assert_error(patched, 400, "validation_error")["details"]


@pytest.mark.parametrize(
    ("allowed", "image"),
    [
        (["localhost:5000"], "localhost:5000/team/agent"),
        (["10.1.2.3"], "10.1.2.3:5000/x"),
        (["[::1]:5000"], "[::1]:5000/x"),
        (["other.example", "192.168.1.5"], "192.168.1.5/x:1"),
    ],
)
def test_a_registry_in_allowed_registries_may_be_named(
    client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings], allowed: list[str], image: str
) -> None:
    configure(ALLOWED_REGISTRIES=allowed)
    _, headers = auth.user()
    assert client.post("/v1/agents", headers=headers, json=agent_payload(image=image)).status_code == 201


def test_allowed_registries_allow_only_the_port_they_name(
    client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]
) -> None:
    configure(ALLOWED_REGISTRIES=["localhost:5000"])
    _, headers = auth.user()
    response = client.post("/v1/agents", headers=headers, json=agent_payload(image="localhost:5001/x"))
    assert_error(response, 400, "validation_error")


@pytest.mark.parametrize("admin", [False, True])
def test_an_image_this_service_built_cannot_be_named(
    app: Flask, client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings], admin: bool
) -> None:
    configure(ALLOWED_REGISTRIES=["docker.io", "index.docker.io"])  # listing a registry changes nothing here
    victim, _ = auth.user()
    built = make_agent(app, victim, image=None, source={"git_url": "https://example.com/victim/private.git"})
    _, headers = auth.admin() if admin else auth.user()
    for image in _built(built["id"]):
        response = client.post("/v1/agents", headers=headers, json=agent_payload(image=image))
        assert "image" in assert_error(response, 400, "validation_error")["details"], image
    assert _agents(app) == 1


def test_an_agent_stored_before_the_rule_is_refused_at_deploy_and_restart(
    app: Flask, client: FlaskClient, auth: AuthActions, fake_runner: FakeRunner
) -> None:
    owner, headers = auth.user()
    agent = make_agent(app, owner)
    with app.app_context():
        db.session.execute(update(Agent).where(Agent.id == agent["id"]).values(image="localhost:5000/x"))
        db.session.commit()
    response = client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={})
    assert "image" in assert_error(response, 400, "validation_error")["details"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Deployment)) == 0
        db.session.execute(update(Agent).where(Agent.id == agent["id"]).values(image="deploy-test/http-agent:latest"))
        db.session.commit()
    deployment = client.post(f"/v1/agents/{agent['id']}/deploy", headers=headers, json={}).get_json()
    with app.app_context():
        db.session.execute(update(Agent).where(Agent.id == agent["id"]).values(image="deploy-service/agent-x:r1"))
        db.session.execute(update(Deployment).where(Deployment.id == deployment["id"]).values(status="ready"))
        db.session.commit()
    restarted = client.post(f"/v1/deployments/{deployment['id']}/restart", headers=headers)
    assert "image" in assert_error(restarted, 400, "validation_error")["details"]


@pytest.mark.parametrize(
    "image",
    ["ghcr.io/acme/agent:1", "registry.example.com:5000/a/b", "busybox", "acme/deploy-service:1", "localhostx/y"],
)
def test_public_registries_and_look_alikes_stay_allowed(client: FlaskClient, auth: AuthActions, image: str) -> None:
    _, headers = auth.user()
    assert client.post("/v1/agents", headers=headers, json=agent_payload(image=image)).status_code == 201
