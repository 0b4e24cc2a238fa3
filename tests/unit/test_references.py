"""The reference rules refuse every malformed input with a sentence, never with another error."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from deploy_service.references import InvalidReference, check_git_url, check_image_origin
from deploy_service.schemas.validators import validate_git_url


@pytest.mark.parametrize("url", ["https://[x/repo", "https://[::1/repo", "https://h]/repo"])
def test_a_malformed_host_is_refused_as_an_invalid_url(url: str) -> None:
    with pytest.raises(InvalidReference, match="Not a valid git URL"):
        check_git_url(url, allow_local=False)
    with pytest.raises(ValidationError):
        validate_git_url(url, allow_local=False)


@pytest.mark.parametrize(
    "image",
    [
        "r.example.com/agents/agent-0b9f:r1",
        "R.EXAMPLE.COM/agents/agent-0b9f:r3",
        "r.example.com/agents/agent-0b9f@sha256:" + "a" * 64,
        "deploy-service/agent-0b9f:r1",
    ],
)
def test_images_pushed_to_the_swarm_registry_are_built_images(image: str) -> None:
    with pytest.raises(InvalidReference, match="Images this service builds"):
        check_image_origin(image, built_registry="r.example.com/agents/")


@pytest.mark.parametrize(
    "image", ["r.example.com/agents/other:1", "r.example.com/agent-0b9f:r1", "deploy-service:1", "x/deploy-service/y"]
)
def test_other_images_of_the_swarm_registry_are_not(image: str) -> None:
    check_image_origin(image, built_registry="r.example.com/agents")


def test_a_private_registry_is_refused_with_its_name_and_the_setting() -> None:
    with pytest.raises(InvalidReference, match=r"10\.1\.2\.3:5000 .*ALLOWED_REGISTRIES"):
        check_image_origin("10.1.2.3:5000/x:1")
    check_image_origin("10.1.2.3:5000/x:1", allowed_registries=("10.1.2.3:5000",))
