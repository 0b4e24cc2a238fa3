"""marshmallow validators for the strings that end up in a container engine or a git command line.

They are strict on purpose: an agent's image, git URL, branch, paths and variable names are passed
to Docker and to `git`, so anything that could be read as an option or a transport is refused here.
The rules for images, git URLs, refs and repository paths are `deploy_service.references` (which the
runner checks again); this module turns their `InvalidReference` into a `ValidationError` and gives
the schemas field validators whose patterns the OpenAPI spec documents. The grammar of a `run_as_user`
is the runner's own (`deploy_service.runner.users`, which decides who a replica runs as). The names, environment
variables and HTTP paths only the request schemas check are defined here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from marshmallow import ValidationError, validate

from deploy_service import references
from deploy_service.references import (
    IMAGE_MESSAGE,
    IMAGE_REFERENCE,
    MAX_IMAGE_LENGTH,
    MAX_PATH_LENGTH,
    MAX_REF_LENGTH,
    REF_MESSAGE,
    REF_NAME,
    REGISTRY_NAME,
    REPO_PATH,
    REPO_PATH_MESSAGE,
    InvalidReference,
)
from deploy_service.runner.users import RUN_AS_USER, RUN_AS_USER_MESSAGE

MAX_RUN_AS_USER_LENGTH = 21

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
REGISTRY_USERNAME = re.compile(r"^[^\x00-\x20\x7f:]{1,255}$")
"""A registry login name: printable, no space and no `:` (which ends the name in a Basic credential)."""
URL_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$")


def _checked(check: Callable[[str], None], value: str) -> None:
    """Run a `references` check; its `InvalidReference` becomes a `ValidationError` with the same message."""
    try:
        check(value)
    except InvalidReference as exc:
        raise ValidationError(str(exc)) from exc


def validate_image(value: str) -> None:
    """An image reference `name[:tag][@digest]`."""
    _checked(references.check_image_reference, value)


def validate_image_origin(value: str, *, allowed_registries: tuple[str, ...], built_registry: str) -> None:
    """An image that names no loopback or private registry (unless allowed) and no image this service built."""
    _checked(
        partial(references.check_image_origin, allowed_registries=allowed_registries, built_registry=built_registry),
        value,
    )


def validate_ref_name(value: str) -> None:
    """A branch name by `git check-ref-format --branch` rules, and never option-like."""
    _checked(references.check_ref_name, value)


def validate_git_url(value: str, *, allow_local: bool) -> None:
    """An `https://` URL without credentials; local paths and `file://` only when `allow_local`."""
    _checked(partial(references.check_git_url, allow_local=allow_local), value)


def validate_git_origin(value: str, *, allowed_hosts: tuple[str, ...]) -> None:
    """A git URL whose host is neither loopback nor private by name or address, unless allowed."""
    _checked(partial(references.check_git_origin, allowed_hosts=allowed_hosts), value)


def validate_repo_path(value: str) -> None:
    """A relative path inside a repository (Dockerfile, build context): no `..`, never absolute."""
    _checked(references.check_repo_path, value)


def validate_webhook_url(value: str) -> None:
    """An http(s) URL in ASCII with a host, no credentials and a valid port, if any."""
    _checked(references.check_webhook_url, value)


def validate_url_path(value: str) -> None:
    """An absolute HTTP path such as `/invoke` or `/health`."""
    if len(value) > MAX_PATH_LENGTH or not URL_PATH.fullmatch(value):
        raise ValidationError("Must be an absolute URL path starting with '/'.")


class FullMatch(validate.Regexp):
    """`validate.Regexp` that matches the whole string (`re.match` lets `$` match before a final newline).

    The OpenAPI spec documents the regex as the field's `pattern`, so the spec and the check agree.
    """

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def image_reference() -> list[validate.Validator]:
    """Validators of an image reference field (length and grammar, both in the spec)."""
    return [
        validate.Length(max=MAX_IMAGE_LENGTH),
        FullMatch(IMAGE_REFERENCE, error=IMAGE_MESSAGE),
    ]


def url_path() -> list[validate.Validator]:
    """Validators of an absolute HTTP path such as `/invoke`."""
    return [
        validate.Length(max=MAX_PATH_LENGTH),
        FullMatch(URL_PATH, error="Must be an absolute URL path starting with '/'."),
    ]


def repo_path() -> list[validate.Validator]:
    """Validators of a relative path inside a repository."""
    return [
        validate.Length(max=MAX_PATH_LENGTH),
        FullMatch(REPO_PATH, error=REPO_PATH_MESSAGE),
    ]


def ref_name() -> list[validate.Validator]:
    """Validators of a git branch or tag name."""
    return [validate.Length(max=MAX_REF_LENGTH), FullMatch(REF_NAME, error=REF_MESSAGE)]


def registry_name() -> list[validate.Validator]:
    """Validators of a registry `host[:port]`."""
    return [
        validate.Length(max=255),
        FullMatch(REGISTRY_NAME, error="Not a registry name (expected host or host:port, e.g. ghcr.io)."),
    ]


def run_as_user_spec() -> list[validate.Validator]:
    """Validators of a numeric `uid[:gid]` that is never uid 0 (the runner's own grammar)."""
    return [validate.Length(max=MAX_RUN_AS_USER_LENGTH), FullMatch(RUN_AS_USER, error=RUN_AS_USER_MESSAGE)]
