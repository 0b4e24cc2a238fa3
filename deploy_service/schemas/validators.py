"""Validators for the strings that end up in a container engine or a git command line.

They are strict on purpose: an agent's image, git URL, branch, paths and variable names are passed
to Docker and to `git`, so anything that could be read as an option or a transport is refused here.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, validate

# Docker image reference grammar (distribution/reference), anchored.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
URL_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$")
# A relative path inside a repository: `.`, or segments of safe characters, never a `..` segment.
REPO_PATH = re.compile(r"^(?:\.|(?!(?:.*/)?\.\.(?:/|$))[A-Za-z0-9_][A-Za-z0-9_./-]*)$")
# A branch or tag by `git check-ref-format --branch` rules, never option-like (see validate_ref_name).
REF_NAME = re.compile(
    r"^(?!.*(?:\.\.|//|@\{|/\.))(?!.*(?:/|\.|\.lock)$)(?!@$)"
    r"[^\x00-\x20\x7f~^:?*\[\\/.-][^\x00-\x20\x7f~^:?*\[\\]*$"
)
MAX_IMAGE_LENGTH = 512
MAX_REF_LENGTH = 255
MAX_PATH_LENGTH = 512
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def validate_image(value: str) -> None:
    """An image reference `name[:tag][@digest]`."""
    if len(value) > MAX_IMAGE_LENGTH or not IMAGE_REFERENCE.fullmatch(value):
        raise ValidationError("Not a valid image reference (expected name[:tag] or name@sha256:...).")


def validate_ref_name(value: str) -> None:
    """A branch name by `git check-ref-format --branch` rules, and never option-like."""
    if len(value) > MAX_REF_LENGTH or not REF_NAME.fullmatch(value):
        raise ValidationError("Not a valid git branch name.")


def validate_git_url(value: str, *, allow_local: bool) -> None:
    """An `https://` URL without credentials; local paths and `file://` only when `allow_local`."""
    if len(value) > 2048 or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValidationError("Not a valid git URL.")
    if value.startswith("-"):
        raise ValidationError("Not a valid git URL.")
    if allow_local and (value.startswith("/") or value.startswith("file:///")):
        path = value[len("file://") :] if value.startswith("file://") else value
        if "/../" in path + "/" or not path.startswith("/"):
            raise ValidationError("Local git sources must be absolute paths without '..'.")
        return
    parts = urlsplit(value)
    if parts.scheme != "https":
        hint = " (local paths are disabled)" if not allow_local else ""
        raise ValidationError(f"Only https:// git URLs are allowed{hint}.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError("Credentials in git URLs are not allowed.")
    host = parts.hostname or ""
    if not _HOSTNAME.fullmatch(host) or not parts.path.strip("/"):
        raise ValidationError("Not a valid git URL: it needs a host and a repository path.")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValidationError("Not a valid git URL: bad port.") from exc


def validate_repo_path(value: str) -> None:
    """A relative path inside a repository (Dockerfile, build context): no `..`, never absolute."""
    if len(value) > MAX_PATH_LENGTH or not REPO_PATH.fullmatch(value):
        raise ValidationError("Must be a relative path inside the repository, without '..'.")


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
        FullMatch(IMAGE_REFERENCE, error="Not a valid image reference (expected name[:tag] or name@sha256:...)."),
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
        FullMatch(REPO_PATH, error="Must be a relative path inside the repository, without '..'."),
    ]


def ref_name() -> list[validate.Validator]:
    """Validators of a git branch or tag name."""
    return [validate.Length(max=MAX_REF_LENGTH), FullMatch(REF_NAME, error="Not a valid git branch name.")]
