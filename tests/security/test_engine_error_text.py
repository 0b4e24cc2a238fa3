"""The engine's error text is stored shortened: one line of at most `STORED_TEXT_MAX_CHARS` characters.

The attack: make the engine fail with an enormous or multi-line message (a registry that answers a pull
with 10 kB of text, an image whose start fails with a crafted error, a build whose last line is huge),
so that every failed deployment stores it in its `error`, its events and the alert that follows, bloating
the database and the pages that show them, or forging what look like further lines of a log. What the
service does: every event message, a deployment's `error` and an event's `error` datum are cut to one line
of at most `STORED_TEXT_MAX_CHARS` (500) characters (`lifecycle.stored_text`) before they are stored, and
so is a webhook delivery's `error`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from deploy_service.reconciler import Reconciler
from deploy_service.runner.base import ExitInfo, ImageUnavailable, ReplicaSpec, ReplicaStartFailed
from tests.fakes import FakeRunner
from tests.helpers import Api, converge, deploy, new_agent

MAX_STORED_TEXT = 500  # STORED_TEXT_MAX_CHARS by default
HUGE = ("The daemon says:\n" + "x" * 79 + "\n") * 128  # 10 kB over 257 lines


def _assert_short(api: Api, deployment_id: str) -> dict[str, Any]:
    body = api.deployment(deployment_id)
    stored = [body["error"]] + [event["message"] for event in api.events(deployment_id)]
    stored += [str(event["data"]["error"]) for event in api.events(deployment_id) if event["data"].get("error")]
    for text in stored:
        assert len(text) <= MAX_STORED_TEXT and "\n" not in text and "\r" not in text, text[:80]
    assert "The daemon says: xxx" in body["error"]
    return body


def test_a_pull_error_of_10_kb_is_stored_as_one_short_line(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, monkeypatch: Any
) -> None:
    def refuse(ref: str, **_: Any) -> Any:
        raise ImageUnavailable(HUGE)

    monkeypatch.setattr(fake_runner, "ensure_image", refuse)
    deployment = deploy(api, new_agent(app, api, image="deploy-test/absent:1")["id"])
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    _assert_short(api, deployment["id"])
    assert api.events(deployment["id"], event_type="image_unavailable")


def test_a_start_error_of_10_kb_is_stored_as_one_short_line(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, monkeypatch: Any
) -> None:
    def refuse(spec: ReplicaSpec) -> Any:
        raise ReplicaStartFailed(HUGE)

    monkeypatch.setattr(fake_runner, "start_replica", refuse)
    deployment = deploy(api, new_agent(app, api)["id"])
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    _assert_short(api, deployment["id"])


def test_a_build_error_of_10_kb_is_stored_as_one_short_line(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    fake_runner.fail_build = HUGE
    agent = new_agent(app, api, image=None, source={"git_url": "https://git.example.com/acme/agent.git"})
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    _assert_short(api, deployment["id"])


def test_a_container_exit_error_of_10_kb_is_stored_as_one_short_line(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, monkeypatch: Any
) -> None:
    deployment = deploy(api, new_agent(app, api)["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    monkeypatch.setattr(fake_runner, "exit_info", lambda container: ExitInfo(exit_code=1, oom_killed=False, error=HUGE))
    converge(reconciler, lambda: bool(fake_runner.of(deployment["id"])))
    fake_runner.crash_all(deployment["id"])
    converge(reconciler, lambda: bool(api.events(deployment["id"], event_type="container_exited")))
    exited = api.events(deployment["id"], event_type="container_exited")[0]
    assert len(exited["data"]["error"]) <= MAX_STORED_TEXT and "\n" not in exited["data"]["error"]
