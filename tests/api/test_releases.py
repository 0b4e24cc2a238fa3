"""Releases on the in-memory runner: which actions make one, how their statuses follow the rollouts, the
diff against the release before, and rollback (to the previous release, to a chosen one, and refused)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask

from deploy_service.reconciler import Reconciler
from deploy_service.settings import Settings
from tests.factories import make_secret
from tests.fakes import FakeRunner
from tests.helpers import FAST, Api, assert_error, converge, deploy, metric, new_agent

V1 = "deploy-test/http-agent:latest"
V2 = "deploy-test/http-agent:v2"
OUTCOMES = ("completed", "failed", "rolled_back")


def _releases(api: Api, deployment_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/deployments/{deployment_id}/releases")
    assert response.status_code == 200, response.get_json()
    items: list[dict[str, Any]] = response.get_json()["items"]
    return items


def _statuses(api: Api, deployment_id: str) -> list[tuple[int, str]]:
    return [(release["number"], release["status"]) for release in _releases(api, deployment_id)]


def _release(api: Api, deployment_id: str, number: int) -> dict[str, Any]:
    response = api.get(f"/v1/deployments/{deployment_id}/releases/{number}")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _rollouts(api: Api) -> dict[str, tuple[float, float]]:
    """`/metrics`: per outcome, `rollouts_total` and the `rollout_duration_seconds` histogram's count."""
    response = api.client.get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    return {
        outcome: (
            metric(text, "rollouts_total", outcome=outcome),
            metric(text, "rollout_duration_seconds_count", outcome=outcome),
        )
        for outcome in OUTCOMES
    }


def _counted(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The rollouts counted between two scrapes, by outcome, each observed in the histogram as well."""
    for outcome in OUTCOMES:
        assert after[outcome][0] - before[outcome][0] == after[outcome][1] - before[outcome][1], outcome
    return {outcome: after[outcome][0] - before[outcome][0] for outcome in OUTCOMES}


def _patch_agent(api: Api, agent_id: str, **fields: Any) -> None:
    response = api.client.patch(f"/v1/agents/{agent_id}", headers=api.headers, json=fields)
    assert response.status_code == 200, response.get_json()


def _rolled_out(api: Api, fake_runner: FakeRunner, deployment_id: str, image: str) -> Any:
    """Ready, with every replica running `image`."""

    def check() -> bool:
        containers = fake_runner.containers.values()
        mine = [c for c in containers if c.info.deployment_id == deployment_id]
        body = api.deployment(deployment_id)
        wanted = fake_runner.image_id(image)
        return (
            body["status"] == "ready" and bool(mine) and all(fake_runner.image_id(c.spec.image) == wanted for c in mine)
        )

    return check


def test_deploy_restart_and_rollback_make_releases_whose_statuses_follow_the_rollouts(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    fake_runner.images.add(V2)
    agent = new_agent(app, api, env={"MODE": "one"})
    deployment = deploy(api, agent["id"], replicas=2)
    assert _statuses(api, deployment["id"]) == [(1, "pending")]
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    [first] = _releases(api, deployment["id"])
    assert first["status"] == "active" and first["reason"] == "deploy" and first["activated_at"]
    assert first["image"] == V1 and first["config"]["env"] == {"MODE": "one"} and first["source"] is None
    assert first["rollback_of"] is None and first["ended_at"] is None and first["error"] is None
    assert "overrides" not in first["config"]
    assert _release(api, deployment["id"], 1)["changes"] == []

    # A restart that changes nothing, and a scale: no release; the replicas are replaced all the same.
    restarted = api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()
    assert restarted["revision"] == 1 and restarted["generation"] == 2
    [replaced] = api.events(deployment["id"], event_type="replicas_replaced")
    assert replaced["data"] == {"number": 1, "generation": 2}
    converge(reconciler, lambda: {c.generation for c in fake_runner.of(deployment["id"])} == {2})
    assert api.post(f"/v1/deployments/{deployment['id']}/scale", {"replicas": 3}).status_code == 202
    converge(reconciler, lambda: api.deployment(deployment["id"])["replicas"]["ready"] == 3)
    assert _statuses(api, deployment["id"]) == [(1, "active")]

    # The agent changed: the restart is release 2, active once its replicas are ready; release 1 superseded.
    _patch_agent(api, agent["id"], image=V2, env={"MODE": "two"})
    body = api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()
    assert body["revision"] == 2 and body["image"] == V2
    assert _statuses(api, deployment["id"]) == [(2, "pending"), (1, "active")]
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V2))
    assert _statuses(api, deployment["id"]) == [(2, "active"), (1, "superseded")]
    second = _release(api, deployment["id"], 2)
    assert second["reason"] == "restart" and second["created_by"] == api.get("/v1/auth/me").get_json()["id"]
    assert second["changes"] == [
        {"field": "config.env.MODE", "from": "one", "to": "two"},
        {"field": "image", "from": V1, "to": V2},
        {"field": "image_id", "from": fake_runner.image_id(V1), "to": fake_runner.image_id(V2)},
    ]
    assert _release(api, deployment["id"], 1)["ended_at"]
    created = api.events(deployment["id"], event_type="release_created")[0]["data"]
    assert created == {"number": 2, "reason": "restart", "rollback_of": None}
    assert api.events(deployment["id"], event_type="rollout_completed")[0]["data"]["number"] == 2

    # Rollback without a target: to release 1 (the newest before the current one that was active).
    response = api.post(f"/v1/deployments/{deployment['id']}/rollback", {})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["revision"] == 3 and body["image"] == V1 and body["config"]["env"] == {"MODE": "one"}
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V1))
    assert _statuses(api, deployment["id"]) == [(3, "active"), (2, "rolled_back"), (1, "superseded")]
    third = _release(api, deployment["id"], 3)
    assert third["reason"] == "rollback" and third["rollback_of"] == 1
    assert {change["field"] for change in third["changes"]} == {"config.env.MODE", "image", "image_id"}
    assert api.events(deployment["id"], event_type="release_created")[0]["data"]["rollback_of"] == 1

    # Rollback to a chosen release; the agent itself is left as it is.
    assert api.post(f"/v1/deployments/{deployment['id']}/rollback", {"release": 2}).status_code == 202
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V2))
    assert _statuses(api, deployment["id"]) == [
        (4, "active"),
        (3, "rolled_back"),
        (2, "rolled_back"),
        (1, "superseded"),
    ]
    assert _release(api, deployment["id"], 4)["rollback_of"] == 2
    assert api.deployment(deployment["id"])["revision"] == 4
    page = api.get(f"/v1/deployments/{deployment['id']}/releases?skip=1&limit=2").get_json()
    assert [item["number"] for item in page["items"]] == [3, 2] and page["total"] == 4


def test_rollback_is_refused_where_the_contract_says(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    rollback = f"/v1/deployments/{deployment['id']}/rollback"
    assert_error(api.post(rollback, {}), 409, "invalid_state")  # deploying
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert "nothing to roll back to" in assert_error(api.post(rollback, {}), 409, "invalid_state")["message"]
    current = assert_error(api.post(rollback, {"release": 1}), 409, "invalid_state")
    assert "current release" in current["message"]
    assert_error(api.post(rollback, {"release": 9}), 404, "not_found")
    assert_error(api.post(rollback, {"release": 0}), 400, "validation_error")
    assert_error(api.post(rollback, {"release": "1"}), 400, "validation_error")
    assert_error(api.post(rollback, {"other": 1}), 400, "validation_error")
    assert_error(api.get(f"/v1/deployments/{deployment['id']}/releases/9"), 404, "not_found")
    assert api.deployment(deployment["id"])["revision"] == 1 and len(_releases(api, deployment["id"])) == 1
    assert api.delete(f"/v1/deployments/{deployment['id']}").status_code == 200
    assert_error(api.post(rollback, {}), 409, "invalid_state")  # killed
    assert _statuses(api, deployment["id"]) == [(1, "superseded")]  # a deleted deployment runs nothing


def test_a_failed_rollout_fails_its_release_and_a_rollback_starts_the_last_good_one_again(
    app: Flask, api: Api, fake_runner: FakeRunner, strict_reconciler: Reconciler
) -> None:
    """With `AUTO_ROLLBACK=false` an update whose image cannot be pulled fails the deployment."""
    reconciler = strict_reconciler
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    _patch_agent(api, agent["id"], image="deploy-test/gone:latest")
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    failed = _release(api, deployment["id"], 2)
    assert failed["status"] == "failed" and "gone" in failed["error"] and failed["ended_at"]
    assert failed["activated_at"] is None
    assert _release(api, deployment["id"], 1)["status"] == "active"  # the last release that was ready

    body = api.post(f"/v1/deployments/{deployment['id']}/rollback", {}).get_json()
    assert body["status"] == "deploying" and body["revision"] == 3 and body["image"] == V1
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V1))
    # Release 1 ran again as release 3: it is superseded by its own copy, not "rolled back".
    assert _statuses(api, deployment["id"]) == [(3, "active"), (2, "failed"), (1, "superseded")]


def test_an_update_whose_image_cannot_be_prepared_is_rolled_back_and_the_old_release_keeps_serving(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    before = {c.info.container_id for c in fake_runner.containers.values()}
    _patch_agent(api, agent["id"], image="deploy-test/gone:latest")
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, lambda: _statuses(api, deployment["id"])[0][1] == "failed")

    failed = _release(api, deployment["id"], 2)
    assert "gone" in failed["error"] and failed["activated_at"] is None
    assert _statuses(api, deployment["id"]) == [(2, "failed"), (1, "active")]
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V1))
    body = api.deployment(deployment["id"])
    assert body["status"] == "ready" and body["revision"] == 1 and body["image"] == V1
    assert {c.info.container_id for c in fake_runner.containers.values()} == before  # never stopped
    [back] = api.events(deployment["id"], event_type="rolled_back")
    assert back["data"]["from"] == 2 and back["data"]["to"] == 1
    alerts = api.get(f"/v1/alerts?deployment_id={deployment['id']}").get_json()["items"]
    assert [a["kind"] for a in alerts if a["status"] == "active"] == ["rollout_failed"]

    # The next restart goes forward again (a new generation, a new release) once the image is there.
    fake_runner.images.add("deploy-test/gone:latest")
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 3
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], "deploy-test/gone:latest"))


def test_a_stop_before_ready_fails_the_pending_release_and_a_start_makes_a_new_one(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"])
    assert api.post(f"/v1/deployments/{deployment['id']}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "stopped"))
    [release] = _releases(api, deployment["id"])
    assert release["status"] == "failed" and "stopped before" in release["error"]
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 2
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert _statuses(api, deployment["id"]) == [(2, "active"), (1, "failed")]

    # Stopped once ready, the active release stays active, and a start without a change runs it again.
    assert api.post(f"/v1/deployments/{deployment['id']}/stop").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "stopped"))
    assert _statuses(api, deployment["id"]) == [(2, "active"), (1, "failed")]
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 2
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert _statuses(api, deployment["id"]) == [(2, "active"), (1, "failed")]


def test_a_secret_change_shows_the_secret_names_never_a_value(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    me = api.get("/v1/auth/me").get_json()
    owner = type("Owner", (), {"id": me["id"]})
    make_secret(app, owner, name="token-one", value="value-one-s3cr3t")  # type: ignore[arg-type]
    make_secret(app, owner, name="token-two", value="value-two-s3cr3t")  # type: ignore[arg-type]
    agent = new_agent(app, api, secrets={"TOKEN": "token-one"})
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    _patch_agent(api, agent["id"], secrets={"TOKEN": "token-two"})
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    response = api.get(f"/v1/deployments/{deployment['id']}/releases/2")
    assert response.get_json()["changes"] == [{"field": "config.secrets.TOKEN", "from": "token-one", "to": "token-two"}]
    listed = api.get(f"/v1/deployments/{deployment['id']}/releases").get_data(as_text=True)
    for text in (response.get_data(as_text=True), listed):
        assert "s3cr3t" not in text


def test_a_git_agents_restart_is_a_new_release_only_when_its_branch_moved(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    """A restart that changed nothing asks the repository where the branch is (no clone): still at the commit
    release 1 built, release 1's own image runs again; moved, the branch's head is built as release 2."""
    source = {"git_url": "https://git.example.com/acme/agent.git", "branch": "main"}
    agent = new_agent(app, api, image=None, source=source)
    deployment = deploy(api, agent["id"])

    def tag(number: int) -> str:
        return f"deploy-service/agent-{agent['id']}:{deployment['id'][:8]}-r{number}"

    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert _release(api, deployment["id"], 1)["source"] == {**source, "commit": "0f" * 20}  # what the build says
    builds = len(fake_runner.builds)
    old = {c.info.container_id for c in fake_runner.containers.values()}
    body = api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()
    assert body["revision"] == 1 and body["image"] == tag(1)
    converge(
        reconciler,
        lambda: (
            api.status_is(deployment["id"], "ready")()
            and not old & {c.info.container_id for c in fake_runner.containers.values() if c.info.state == "running"}
        ),
    )
    assert len(fake_runner.builds) == builds, "the branch did not move: nothing is built"
    assert [(s.git_url, s.branch) for s in fake_runner.branch_heads] == [(source["git_url"], "main")]
    assert _statuses(api, deployment["id"]) == [(1, "active")]
    assert api.events(deployment["id"], event_type="replicas_replaced")

    fake_runner.build_commit = "1e" * 20  # the branch moved
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 1
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], tag(2)))
    assert fake_runner.builds[-1].tag == tag(2) and fake_runner.builds[-1].commit is None  # the branch's head
    assert _statuses(api, deployment["id"]) == [(2, "active"), (1, "superseded")]
    assert _release(api, deployment["id"], 2)["changes"] == [
        {"field": "image", "from": tag(1), "to": tag(2)},
        {"field": "image_id", "from": fake_runner.image_ids[tag(1)], "to": fake_runner.image_ids[tag(2)]},
        {"field": "source.commit", "from": "0f" * 20, "to": "1e" * 20},
    ]
    [moved] = api.events(deployment["id"], event_type="branch_moved")
    assert moved["data"] == {"number": 2, "branch": "main", "commit": "1e" * 20}
    assert api.deployment(deployment["id"])["revision"] == 2


def test_a_restart_whose_repository_cannot_be_asked_runs_its_release_again_and_says_so(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api, image=None, source={"git_url": "https://git.example.com/acme/agent.git"})
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    builds = len(fake_runner.builds)
    fake_runner.fail_branch_head = "git ls-remote failed (exit code 128)"
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, lambda: bool(api.events(deployment["id"], event_type="branch_unchecked")))
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    [unchecked] = api.events(deployment["id"], event_type="branch_unchecked")
    assert unchecked["data"]["commit"] == "0f" * 20 and "ls-remote failed" in unchecked["message"]
    assert len(fake_runner.builds) == builds and _statuses(api, deployment["id"]) == [(1, "active")]


def _git_releases(app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, count: int) -> tuple[str, Any]:
    """A git agent's deployment with releases 1..`count`, each built from another commit; (id, tag of N)."""
    agent = new_agent(app, api, image=None, source={"git_url": "https://git.example.com/acme/agent.git"})
    deployment_id = str(deploy(api, agent["id"])["id"])

    def tag(number: int) -> str:
        return f"deploy-service/agent-{agent['id']}:{deployment_id[:8]}-r{number}"

    for number in range(1, count + 1):
        fake_runner.build_commit = f"{number:02x}" * 20
        if number > 1:
            assert api.post(f"/v1/deployments/{deployment_id}/restart").status_code == 202
        converge(reconciler, _rolled_out(api, fake_runner, deployment_id, tag(number)))
    return deployment_id, tag


def test_a_rollback_to_a_git_release_runs_its_own_image_without_building_the_branch(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    deployment_id, tag = _git_releases(app, api, fake_runner, reconciler, 2)
    first = _release(api, deployment_id, 1)
    builds = len(fake_runner.builds)
    fake_runner.build_commit = "ff" * 20  # the branch moved on: a build now would check out another commit

    assert api.post(f"/v1/deployments/{deployment_id}/rollback", {"release": 1}).status_code == 202
    converge(reconciler, lambda: _statuses(api, deployment_id)[0] == (3, "active"))

    assert len(fake_runner.builds) == builds  # nothing built: release 1's image ran again
    third = _release(api, deployment_id, 3)
    assert third["image_id"] == first["image_id"] and third["source"]["commit"] == "01" * 20
    mine = [c for c in fake_runner.containers.values() if c.info.deployment_id == deployment_id]
    assert mine and {c.spec.image for c in mine} == {first["image_id"]}


def test_old_release_images_are_removed_and_a_rollback_to_one_builds_its_commit_again(
    app: Flask, api: Api, fake_runner: FakeRunner, configure: Callable[..., Settings]
) -> None:
    reconciler = Reconciler(app, runner=fake_runner, settings=replace(FAST, release_images_kept=2))
    try:
        deployment_id, tag = _git_releases(app, api, fake_runner, reconciler, 3)
        assert fake_runner.removed_images == [tag(1)]  # releases 2 and 3 keep theirs
        [removed] = api.events(deployment_id, event_type="images_removed")
        assert removed["data"]["images"] == [tag(1)]
        assert fake_runner.local_image(_release(api, deployment_id, 1)["image_id"]) is None

        fake_runner.build_commit = "ff" * 20  # the branch's head: never what release 1 built
        assert api.post(f"/v1/deployments/{deployment_id}/rollback", {"release": 1}).status_code == 202
        converge(reconciler, lambda: _statuses(api, deployment_id)[0] == (4, "active"))

        rebuilt = fake_runner.builds[-1]
        assert rebuilt.commit == "01" * 20 and rebuilt.tag == tag(1)
        fourth = _release(api, deployment_id, 4)
        assert fourth["source"]["commit"] == "01" * 20 and fourth["image_id"] == fake_runner.image_ids[tag(1)]
        started = api.events(deployment_id, event_type="build_started")[0]
        assert started["data"] == {"commit": "01" * 20} and "01" * 20 in started["message"]
        assert tag(2) in fake_runner.removed_images  # past the last two again (4 and 3 are kept)
    finally:
        reconciler.close()


def test_a_git_rollback_whose_commit_cannot_be_fetched_fails_the_new_release_and_keeps_the_old_serving(
    app: Flask, api: Api, fake_runner: FakeRunner
) -> None:
    reconciler = Reconciler(app, runner=fake_runner, settings=replace(FAST, release_images_kept=1))
    try:
        deployment_id, tag = _git_releases(app, api, fake_runner, reconciler, 3)
        assert tag(1) in fake_runner.removed_images
        fake_runner.fail_build = "fetching commit 0101... failed (exit code 128)"
        assert api.post(f"/v1/deployments/{deployment_id}/rollback", {"release": 1}).status_code == 202
        converge(reconciler, lambda: _statuses(api, deployment_id)[0][1] != "pending")
        [failed] = api.events(deployment_id, event_type="build_failed")
        assert "fetching commit" in failed["message"]
        assert _statuses(api, deployment_id)[:2] == [(4, "failed"), (3, "active")]
        converge(reconciler, _rolled_out(api, fake_runner, deployment_id, tag(3)))  # release 3 still serves
    finally:
        reconciler.close()


def test_a_rollback_to_an_image_todays_registry_rules_refuse_is_a_400_and_changes_nothing(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler, configure: Callable[..., Settings]
) -> None:
    inside = "localhost:5000/agent:1"
    configure(ALLOWED_REGISTRIES=["localhost:5000"])
    fake_runner.images.update({inside, V2})
    agent = new_agent(app, api, image=inside)
    deployment = deploy(api, agent["id"])
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    _patch_agent(api, agent["id"], image=V2)
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V2))

    configure(ALLOWED_REGISTRIES=[])  # the operator no longer lets images come from inside
    refused = assert_error(api.post(f"/v1/deployments/{deployment['id']}/rollback"), 400, "validation_error")
    assert "image" in refused["details"]
    assert _statuses(api, deployment["id"]) == [(2, "active"), (1, "superseded")]
    assert api.deployment(deployment["id"])["revision"] == 2


def test_a_release_runs_the_image_id_of_its_first_start_even_after_its_tag_moved(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    first_id, moved_id = fake_runner.image_id(V1), "sha256:" + "b" * 64
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert _release(api, deployment["id"], 1)["image_id"] == first_id
    assert {c.spec.image for c in fake_runner.containers.values()} == {first_id}

    # The tag moves: self-healing and a scale-up still run release 1's image.
    fake_runner.move_tag(V1, moved_id)
    fake_runner.crash(fake_runner.of(deployment["id"])[0].container_id)
    assert api.post(f"/v1/deployments/{deployment['id']}/scale", {"replicas": 3}).status_code == 202
    converge(reconciler, lambda: api.deployment(deployment["id"])["replicas"]["ready"] == 3)
    running = [c for c in fake_runner.containers.values() if c.info.running]
    assert len(running) == 3 and {c.spec.image for c in running} == {first_id}
    assert _statuses(api, deployment["id"]) == [(1, "active")]

    # A restart: the tag names another image now, so it is release 2, pinned to that image.
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], moved_id))
    assert _statuses(api, deployment["id"]) == [(2, "active"), (1, "superseded")]
    second = _release(api, deployment["id"], 2)
    assert second["reason"] == "restart" and second["image_id"] == moved_id
    assert {"field": "image_id", "from": first_id, "to": moved_id} in second["changes"]

    # A rollback runs release 1's image again, though its tag names the other one.
    assert api.post(f"/v1/deployments/{deployment['id']}/rollback").status_code == 202
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], first_id))
    assert _release(api, deployment["id"], 3)["image_id"] == first_id
    running = [c for c in fake_runner.containers.values() if c.info.running]
    assert {c.spec.image for c in running} == {first_id}


def test_a_rollback_whose_pinned_image_is_gone_and_whose_tag_moved_fails_with_the_reason(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    """Release 3 (back to 1) cannot run: it fails with the reason, and release 2, which serves, stays."""
    first_id, moved_id = fake_runner.image_id(V1), "sha256:" + "c" * 64
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=1)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    fake_runner.move_tag(V1, moved_id)
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], moved_id))
    fake_runner.images.discard(first_id)
    assert api.post(f"/v1/deployments/{deployment['id']}/rollback").status_code == 202
    converge(reconciler, lambda: _statuses(api, deployment["id"])[0] == (3, "failed"))
    third = _release(api, deployment["id"], 3)
    assert first_id in third["error"]
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], moved_id))
    assert api.deployment(deployment["id"])["revision"] == 2


@pytest.fixture()
def strict_reconciler(app: Flask, fake_runner: FakeRunner) -> Iterator[Reconciler]:
    """A reconciler with `AUTO_ROLLBACK=false`."""
    reconciler = Reconciler(app, runner=fake_runner, settings=replace(FAST, auto_rollback=False))
    yield reconciler
    reconciler.close()


def _crash_image(fake_runner: FakeRunner, image: str) -> None:
    """Every replica started from `image` exits at once (a bad version)."""
    bad = fake_runner.image_id(image)

    def crash(spec: Any) -> None:
        if fake_runner.image_id(spec.image) == bad:
            [found] = [c for c in fake_runner.containers.values() if c.info.name == spec.name]
            fake_runner.crash(found.info.container_id)

    fake_runner.on_start = crash


def test_a_crashing_update_rolls_back_to_the_release_that_still_serves(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    fake_runner.images.add(V2)
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    old = {c.info.container_id for c in fake_runner.containers.values()}
    _crash_image(fake_runner, V2)
    _patch_agent(api, agent["id"], image=V2)
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 2

    converge(reconciler, lambda: bool(api.events(deployment["id"], event_type="rolled_back")))
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    body = api.deployment(deployment["id"])
    assert body["revision"] == 1 and body["image"] == V1 and body["error"] is None
    assert {c.container_id for c in fake_runner.of(deployment["id"])} == old, "the old replicas stayed, alone"
    assert _statuses(api, deployment["id"]) == [(2, "failed"), (1, "active")]
    assert "restart budget" in _release(api, deployment["id"], 2)["error"]
    [failed] = api.events(deployment["id"], event_type="rollout_failed")
    assert failed["data"]["number"] == 2
    [back] = api.events(deployment["id"], event_type="rolled_back")
    assert back["data"]["from"] == 2 and back["data"]["to"] == 1
    assert api.events(deployment["id"], event_type="stopped") == []
    alerts = api.get(f"/v1/alerts?deployment_id={deployment['id']}").get_json()["items"]
    assert [(a["kind"], a["severity"]) for a in alerts if a["status"] == "active"] == [("rollout_failed", "warning")]

    # The next restart is release 3 (after the failed 2), from the agent's settings.
    fake_runner.on_start = None
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 3
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V2))
    assert _statuses(api, deployment["id"]) == [(3, "active"), (2, "failed"), (1, "superseded")]


def test_without_auto_rollback_a_crashing_update_fails_the_deployment(
    app: Flask, api: Api, fake_runner: FakeRunner, strict_reconciler: Reconciler
) -> None:
    reconciler = strict_reconciler
    fake_runner.images.add(V2)
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    _crash_image(fake_runner, V2)
    _patch_agent(api, agent["id"], image=V2)
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    assert fake_runner.of(deployment["id"]) == [] and api.events(deployment["id"], event_type="rolled_back") == []
    assert _statuses(api, deployment["id"]) == [(2, "failed"), (1, "active")]


def test_metrics_count_a_completed_rollout(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    fake_runner.images.add(V2)
    before = _rollouts(api)
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert _counted(before, _rollouts(api)) == {"completed": 1, "failed": 0, "rolled_back": 0}
    _patch_agent(api, agent["id"], image=V2)
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 2
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V2))
    assert _counted(before, _rollouts(api)) == {"completed": 2, "failed": 0, "rolled_back": 0}
    text = api.client.get("/metrics").get_data(as_text=True)
    assert metric(text, "rollout_duration_seconds_sum", outcome="completed") > 0
    assert 'rollout_duration_seconds_bucket{le="+Inf",outcome="completed"}' in text


def test_metrics_count_an_automatic_rollback(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    fake_runner.images.add(V2)
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    before = _rollouts(api)
    _crash_image(fake_runner, V2)
    _patch_agent(api, agent["id"], image=V2)
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["revision"] == 2
    converge(reconciler, lambda: bool(api.events(deployment["id"], event_type="rolled_back")))
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert _counted(before, _rollouts(api)) == {"completed": 0, "failed": 0, "rolled_back": 1}


def test_metrics_count_a_failed_rollout(
    app: Flask, api: Api, fake_runner: FakeRunner, strict_reconciler: Reconciler
) -> None:
    reconciler = strict_reconciler
    fake_runner.images.add(V2)
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    before = _rollouts(api)
    _crash_image(fake_runner, V2)
    _patch_agent(api, agent["id"], image=V2)
    assert api.post(f"/v1/deployments/{deployment['id']}/restart").status_code == 202
    converge(reconciler, api.status_is(deployment["id"], "failed"))
    assert _counted(before, _rollouts(api)) == {"completed": 0, "failed": 1, "rolled_back": 0}


def test_a_restart_after_an_automatic_rollback_rolls_out_a_generation_never_used_before(
    app: Flask, api: Api, fake_runner: FakeRunner, reconciler: Reconciler
) -> None:
    fake_runner.images.add(V2)
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=1)
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    crashed: list[Any] = []
    _crash_image(fake_runner, V2)
    crash = fake_runner.on_start
    assert crash is not None

    def crash_and_keep(spec: Any) -> None:
        crash(spec)
        crashed.extend(c for c in fake_runner.containers.values() if c.info.name == spec.name)

    fake_runner.on_start = crash_and_keep
    _patch_agent(api, agent["id"], image=V2)
    failed_generation = api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()["generation"]
    converge(reconciler, lambda: bool(api.events(deployment["id"], event_type="rolled_back")))
    converge(reconciler, api.status_is(deployment["id"], "ready"))
    assert api.deployment(deployment["id"])["generation"] < failed_generation, "back to the one that serves"
    # The engine kept one of the failed replicas (its removal failed): it must not be adopted by its name.
    leftover = crashed[-1]
    fake_runner.containers[leftover.info.container_id] = leftover

    fake_runner.on_start = None
    restarted = api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()
    assert restarted["generation"] > failed_generation
    converge(reconciler, _rolled_out(api, fake_runner, deployment["id"], V2))
    [replica] = fake_runner.of(deployment["id"])
    assert replica.generation == restarted["generation"] and replica.container_id != leftover.info.container_id
    assert api.deployment(deployment["id"])["generation"] == restarted["generation"]
    # Each later restart goes on from there.
    again = api.post(f"/v1/deployments/{deployment['id']}/restart").get_json()
    assert again["generation"] == restarted["generation"] + 1
