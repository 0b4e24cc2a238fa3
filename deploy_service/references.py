"""The rules for the strings a user names things outside the service with: images, git URLs, refs, paths,
webhook URLs.

An agent's image reference, git URL, branch, Dockerfile path and build context end up in a container
engine call or a `git` command line, so anything that could be read as an option or a transport is
refused. The rules are written once, here, as pure functions that raise `InvalidReference` (a
`ValueError`) with the sentence a user reads. Two layers check them:

- the request schemas (`schemas.validators`), which turn `InvalidReference` into a marshmallow
  `ValidationError` and document the patterns in the OpenAPI spec;
- the runner (`runner.git`, `runner.docker_images`, `runner.docker_runner`), again, before it spawns
  git or asks the engine: a caller that skipped the schema still cannot smuggle an option in.
- for an agent's image, where it comes from (`check_image_origin`: no loopback or private-range registry
  unless the operator allows it, never an image this service built), again when a deployment is made
  from the stored agent (`services.deployments.resolve_config`), for agents stored before the rule.
- for an agent's git source, where it comes from (`check_git_origin`: no loopback or private-range host
  by its name or address unless the operator allows it), again at deploy for agents stored before the
  rule; the runner (`runner.git`) then resolves the host once, refuses a private answer
  (`is_public_address`) and pins git to the addresses it checked.
- for webhook URLs, the webhook sender (`services.webhook_sender`), again, before every attempt
  (a URL stored before a rule was added is refused there, never sent).

This module imports nothing of the service (no Flask, marshmallow or SQLAlchemy), so both may use it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = [
    "BUILT_IMAGE_REPOSITORY",
    "IMAGE_MESSAGE",
    "IMAGE_REFERENCE",
    "InvalidReference",
    "MAX_IMAGE_LENGTH",
    "MAX_PATH_LENGTH",
    "MAX_REF_LENGTH",
    "REF_MESSAGE",
    "REF_NAME",
    "REPO_PATH",
    "REPO_PATH_MESSAGE",
    "GIT_DEFAULT_PORT",
    "check_git_origin",
    "check_git_url",
    "check_image_origin",
    "check_image_reference",
    "check_ref_name",
    "check_repo_path",
    "check_registry_name",
    "check_webhook_url",
    "git_host_allowed",
    "git_host_port",
    "is_public_address",
    "resolved_addresses",
    "image_registry",
    "DOCKER_HUB",
]

# Docker image reference grammar (distribution/reference), anchored.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REGISTRY_NAME = re.compile(rf"^{_DOMAIN}$")
IMAGE_REFERENCE = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$")
# A branch or tag by `git check-ref-format --branch` rules, never option-like (see check_ref_name).
REF_NAME = re.compile(
    r"^(?!.*(?:\.\.|//|@\{|/\.))(?!.*(?:/|\.|\.lock)$)(?!@$)"
    r"[^\x00-\x20\x7f~^:?*\[\\/.-][^\x00-\x20\x7f~^:?*\[\\]*$"
)
# A relative path inside a repository: `.`, or segments of safe characters, never a `..` segment.
REPO_PATH = re.compile(r"^(?:\.|(?!(?:.*/)?\.\.(?:/|$))[A-Za-z0-9_][A-Za-z0-9_./-]*)$")
MAX_IMAGE_LENGTH = 512
MAX_REF_LENGTH = 255
MAX_PATH_LENGTH = 512
MAX_GIT_URL_LENGTH = 2048
MAX_WEBHOOK_URL_LENGTH = 2048
GIT_DEFAULT_PORT = 443
"""The port of an `https://` git URL that names none."""
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
# A DNS name: labels of 1-63 letters, digits, hyphens (not at either end) or underscores; 253 at most.
_DNS_NAME = re.compile(
    r"^(?=.{1,253}\.?$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$"
)

# Where this service puts the images it builds from git sources (`deploy-service/agent-<id>:r<N>`).
BUILT_IMAGE_REPOSITORY = "deploy-service"
# The names the engine reads as Docker Hub (a reference without a registry is one of them too).
_DOCKER_HUB = ("docker.io", "index.docker.io")
DOCKER_HUB = "docker.io"
"""How the service names Docker Hub as a registry (an agent's `registry_auth.registry`)."""
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

IMAGE_MESSAGE = "Not a valid image reference (expected name[:tag] or name@sha256:...)."
REF_MESSAGE = "Not a valid git branch name."
REPO_PATH_MESSAGE = "Must be a relative path inside the repository, without '..'."


class InvalidReference(ValueError):
    """A reference breaks its rule; `str()` is the sentence the user reads."""


def check_image_reference(value: str) -> None:
    """An image reference `name[:tag][@digest]`.

    Raises:
        InvalidReference: it is too long or not in the reference grammar.
    """
    if len(value) > MAX_IMAGE_LENGTH or not IMAGE_REFERENCE.fullmatch(value):
        raise InvalidReference(IMAGE_MESSAGE)


def _split_image(value: str) -> tuple[str | None, str]:
    """(registry `host[:port]` or None for Docker Hub, repository path without tag or digest), as the
    engine reads a reference: the first component is a registry when it has a `.` or `:`, is
    `localhost`, or has an upper-case letter (distribution/reference's rule)."""
    name = value.split("@", 1)[0]
    first, slash, rest = name.partition("/")
    registry: str | None = None
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        registry, name = first.lower(), rest
    head, _, last = name.rpartition("/")
    last = last.split(":", 1)[0]
    path = f"{head}/{last}" if head else last
    if registry in _DOCKER_HUB:
        registry = None
    return registry, path


def image_registry(value: str) -> str:
    """The registry (`host[:port]`, lower case) the engine pulls the image reference `value` from; `docker.io`
    for Docker Hub (a reference without a registry, or one naming `index.docker.io`)."""
    return _split_image(value)[0] or DOCKER_HUB


def check_registry_name(value: str) -> None:
    """A registry as `host[:port]` (no scheme, path or credentials), as the first component of an image reference.

    Raises:
        InvalidReference: anything else.
    """
    if len(value) > 255 or not REGISTRY_NAME.fullmatch(value):
        raise InvalidReference("Not a registry name (expected host or host:port, e.g. ghcr.io or 10.0.0.5:5000).")


def _registry_host(registry: str) -> str:
    """The host of `host[:port]` (an IPv6 address keeps its brackets)."""
    if registry.startswith("["):
        return registry[: registry.find("]") + 1]
    return registry.split(":", 1)[0]


def _is_private_host(host: str) -> bool:
    """Whether a registry or git host is loopback or non-public by its name or address alone (no lookup).

    Addresses in every form the engine's and git's resolvers accept count, `127.1`, `2130706433` and
    `0x7f.1` included (inet_aton's), and an IPv4 address mapped into IPv6. A DNS name that merely
    resolves to a private address is not caught here: for an image the engine resolves it later, and
    only the operator's network can refuse it; for a git source the runner checks the answer (`runner.git`).
    """
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    return not is_public_address(address)


def resolved_addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to for TCP, once each, in the resolver's order ([] when it does not
    resolve). One lookup, so that a caller can check the answer and then connect to exactly it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    except (OSError, UnicodeError, ValueError):
        return []


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is on the public internet: global, not multicast (an IPv4-mapped IPv6 address
    counts as the IPv4 address it maps)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _is_built_image(registry: str | None, path: str, built_registry: str) -> bool:
    if registry is None and path.startswith(f"{BUILT_IMAGE_REPOSITORY}/"):
        return True
    if not built_registry:
        return False
    # A Swarm deployment pushes its builds as `<SWARM_REGISTRY>/agent-<id>:r<N>` (runner.swarm_runner).
    pushed_registry, pushed_path = _split_image(built_registry.rstrip("/") + "/agent-")
    return registry == pushed_registry and path.startswith(pushed_path)


def check_image_origin(value: str, *, allowed_registries: Iterable[str] = (), built_registry: str = "") -> None:
    """An image reference that names neither a loopback or private-range registry nor an image this
    service built.

    Args:
        allowed_registries: `host[:port]` entries (lower case) that may be named although private: an
            entry with a port allows that port, one without allows every port of the host
            (`ALLOWED_REGISTRIES`). They never allow a built image.
        built_registry: the registry the service pushes its builds to (`SWARM_REGISTRY`), if any.

    Raises:
        InvalidReference: it names such a registry or image (the sentence says which and why).
    """
    registry, path = _split_image(value)
    if _is_built_image(registry, path, built_registry):
        raise InvalidReference(
            f"Images this service builds ({BUILT_IMAGE_REPOSITORY}/...) cannot be named: an agent built from a git "
            "source runs its own build; give its source instead."
        )
    if registry is None or not _is_private_host(_registry_host(registry)):
        return
    allowed = set(allowed_registries)
    if registry in allowed or _registry_host(registry) in allowed:
        return
    raise InvalidReference(
        f"The registry {registry} is on a loopback or private network; images may come from it only when "
        "the operator lists it in ALLOWED_REGISTRIES."
    )


def check_ref_name(value: str) -> None:
    """A branch name by `git check-ref-format --branch` rules, and never option-like.

    Raises:
        InvalidReference: it is too long or breaks a rule.
    """
    if len(value) > MAX_REF_LENGTH or not REF_NAME.fullmatch(value):
        raise InvalidReference(REF_MESSAGE)


def check_git_url(value: str, *, allow_local: bool) -> None:
    """An `https://` URL without credentials; local paths and `file://` only when `allow_local`.

    Raises:
        InvalidReference: another transport, credentials, a control character, an option-like value,
            no host or path, a bad port, or (when allowed at all) a relative local path or one with `..`.
    """
    if len(value) > MAX_GIT_URL_LENGTH or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidReference("Not a valid git URL.")
    if value.startswith("-"):
        raise InvalidReference("Not a valid git URL.")
    if allow_local and (value.startswith("/") or value.startswith("file:///")):
        path = value[len("file://") :] if value.startswith("file://") else value
        if "/../" in path + "/" or not path.startswith("/"):
            raise InvalidReference("Local git sources must be absolute paths without '..'.")
        return
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        raise InvalidReference("Not a valid git URL.") from exc
    if parts.scheme != "https":
        hint = " (local paths are disabled)" if not allow_local else ""
        raise InvalidReference(f"Only https:// git URLs are allowed{hint}.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidReference("Credentials in git URLs are not allowed.")
    host = parts.hostname or ""
    if not _HOSTNAME.fullmatch(host) or not parts.path.strip("/"):
        raise InvalidReference("Not a valid git URL: it needs a host and a repository path.")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidReference("Not a valid git URL: bad port.") from exc


def _is_local_source(value: str) -> bool:
    return value.startswith("/") or value.startswith("file://")


def git_host_port(value: str) -> tuple[str, int] | None:
    """(host in lower case, port) of a git URL (meant for one `check_git_url` accepts); None for a local
    source (a path or `file://`).

    Raises:
        InvalidReference: the URL cannot be taken apart (a bad bracket or port).
    """
    if _is_local_source(value):
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise InvalidReference("Not a valid git URL.") from exc
    return (parts.hostname or "").lower(), port or GIT_DEFAULT_PORT


def git_host_allowed(host: str, port: int, allowed_hosts: Iterable[str]) -> bool:
    """Whether `ALLOWED_GIT_HOSTS` lists `host` (every port) or `host:port` (that port only; `host:443`
    also matches a URL that names no port)."""
    allowed = set(allowed_hosts)
    return host in allowed or f"{host}:{port}" in allowed


def check_git_origin(value: str, *, allowed_hosts: Iterable[str] = ()) -> None:
    """A git URL whose host is not loopback or private-range by its name or address (no lookup: the
    runner checks what the name resolves to before it clones). Local sources are not concerned (whether
    they are allowed at all is `check_git_url`'s rule).

    Args:
        value: a URL `check_git_url` accepts.
        allowed_hosts: `host[:port]` entries (lower case) that may be named although private
            (`ALLOWED_GIT_HOSTS`); an entry without a port allows every port of the host.

    Raises:
        InvalidReference: the host is loopback or private and not allowed (or the URL cannot be taken apart).
    """
    target = git_host_port(value)
    if target is None:
        return
    host, port = target
    if not _is_private_host(host) or git_host_allowed(host, port, allowed_hosts):
        return
    raise InvalidReference(
        f"The git host {host} is on a loopback or private network; sources may come from it only when the "
        "operator lists it in ALLOWED_GIT_HOSTS."
    )


def check_repo_path(value: str) -> None:
    """A relative path inside a repository (Dockerfile, build context): no `..`, never absolute.

    Raises:
        InvalidReference: it is too long, absolute, or has a `..` segment or an unsafe character.
    """
    if len(value) > MAX_PATH_LENGTH or not REPO_PATH.fullmatch(value):
        raise InvalidReference(REPO_PATH_MESSAGE)


def check_webhook_url(value: str) -> None:
    """An `http://` or `https://` URL in ASCII with a host (a DNS name or an IP address), no
    credentials and, if it names a port, one in 1-65535. Whether the host may be called (where it
    resolves) is the sender's check, not this one.

    Raises:
        InvalidReference: too long, not ASCII, a space or control character, another scheme, no or a
            malformed host, credentials, or a bad port.
    """
    if (
        len(value) > MAX_WEBHOOK_URL_LENGTH
        or not value.isascii()
        or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in value)
    ):
        raise InvalidReference("Not a valid URL: it must be ASCII (an IDN host in its xn-- form), without spaces.")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:  # an unbalanced or bad IPv6 bracket, a port that is no number or out of range
        raise InvalidReference("Not a valid URL: bad host or port.") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidReference("Only http:// and https:// URLs are allowed.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidReference("Credentials in the URL are not allowed.")
    host = parts.hostname or ""
    if not (_DNS_NAME.fullmatch(host) or _is_ip_address(host)):
        raise InvalidReference("Not a valid URL: it needs a host (a DNS name or an IP address).")
    if port == 0:
        raise InvalidReference("Not a valid URL: the port must be 1-65535.")


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
