"""The validators that guard strings passed to Docker and git."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from deploy_service.schemas.validators import validate_git_url, validate_image, validate_ref_name


@pytest.mark.parametrize("branch", ["main", "feature/new-thing", "v1.2.3", "release-2026_11", "a/b/c", "UPPER"])
def test_valid_branches(branch: str) -> None:
    validate_ref_name(branch)


@pytest.mark.parametrize(
    "branch",
    [
        "-x",
        "a..b",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "a/",
        "/a",
        "a.",
        "a.lock",
        "@",
        "a@{b",
        "a//b",
        "a/.b",
        ".a",
        "a\x00b",
        "a\tb",
        "x" * 256,
    ],
)
def test_invalid_branches(branch: str) -> None:
    with pytest.raises(ValidationError):
        validate_ref_name(branch)


@pytest.mark.parametrize(
    "url",
    ["https://github.com/a/b.git", "https://gitlab.example.com:8443/group/sub/repo", "https://git.example.com/r"],
)
def test_valid_git_urls(url: str) -> None:
    validate_git_url(url, allow_local=False)


@pytest.mark.parametrize(
    "url",
    ["file:///srv/repo", "/srv/repo", "ext::sh", "https://h:bad/r", "https://u@h/r", "https:///r", "HTTPS://h/r x"],
)
def test_local_and_odd_git_urls_refused_without_flag(url: str) -> None:
    with pytest.raises(ValidationError):
        validate_git_url(url, allow_local=False)


def test_local_git_urls_with_flag() -> None:
    validate_git_url("/srv/repo", allow_local=True)
    validate_git_url("file:///srv/repo", allow_local=True)
    for bad in ("relative/repo", "file://host/srv", "/srv/../etc", "-/srv"):
        with pytest.raises(ValidationError):
            validate_git_url(bad, allow_local=True)


@pytest.mark.parametrize("image", ["a", "a/b", "a:1", "host:5000/a/b:tag", "a@sha256:" + "0" * 64, "a__b", "a-b.c"])
def test_valid_images(image: str) -> None:
    validate_image(image)


@pytest.mark.parametrize("image", ["A", "a:", ":a", "a b", "a/", "/a", "a..b", "-a", "a:tag:tag", "a@sha256:xyz"])
def test_invalid_images(image: str) -> None:
    with pytest.raises(ValidationError):
        validate_image(image)
