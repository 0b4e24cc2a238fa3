"""The reference rules refuse every malformed input with a sentence, never with another error."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from deploy_service.references import InvalidReference, check_git_url
from deploy_service.schemas.validators import validate_git_url


@pytest.mark.parametrize("url", ["https://[x/repo", "https://[::1/repo", "https://h]/repo"])
def test_a_malformed_host_is_refused_as_an_invalid_url(url: str) -> None:
    with pytest.raises(InvalidReference, match="Not a valid git URL"):
        check_git_url(url, allow_local=False)
    with pytest.raises(ValidationError):
        validate_git_url(url, allow_local=False)
