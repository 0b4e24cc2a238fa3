"""What a release's `changes` list: each flattened path that differs from the release before it."""

from __future__ import annotations

from typing import Any

from deploy_service.models import Release
from deploy_service.services.releases import Change, changes


def _release(number: int, *, image: str = "acme/agent:1", source: Any = None, **config: Any) -> Release:
    base = {
        "image": image,
        "source": None,
        "port": 8080,
        "env": {"MODE": "one"},
        "secrets": {"TOKEN": "api-token"},
        "resources": {"cpu": 0.5, "memory_mb": 256},
        "overrides": {"env": {"MODE": "one"}},
    }
    return Release(number=number, image=image, source=source, config={**base, **config})


def test_the_first_release_has_no_changes() -> None:
    assert changes(None, _release(1)) == []


def test_an_identical_release_has_no_changes() -> None:
    assert changes(_release(1), _release(2)) == []


def test_image_env_and_resources_changes_are_flattened_paths_in_order() -> None:
    before = _release(1)
    after = _release(
        2,
        image="acme/agent:2",
        env={"MODE": "two", "NEW": "x"},
        resources={"cpu": 0.5, "memory_mb": 512},
        overrides={"env": {"MODE": "two"}},
    )
    assert changes(before, after) == [
        Change("config.env.MODE", "one", "two"),
        Change("config.env.NEW", None, "x"),
        Change("config.resources.memory_mb", 256, 512),
        Change("image", "acme/agent:1", "acme/agent:2"),
    ]


def test_a_secret_shows_its_name_and_a_removed_one_goes_to_null() -> None:
    after = _release(2, secrets={"OTHER": "other-secret"})
    assert changes(_release(1), after) == [
        Change("config.secrets.OTHER", None, "other-secret"),
        Change("config.secrets.TOKEN", "api-token", None),
    ]


def test_source_branch_and_commit_changes() -> None:
    before = _release(1, source={"git_url": "https://git.example.com/a.git", "branch": "main", "commit": "a" * 40})
    after = _release(2, source={"git_url": "https://git.example.com/a.git", "branch": "next", "commit": None})
    assert changes(before, after) == [
        Change("source.branch", "main", "next"),
        Change("source.commit", "a" * 40, None),
    ]
