"""Who a replica runs as: never uid 0. The rule both backends (Docker, Swarm) apply, written once.

An image's configured user (`Config.User`) is kept only when it is a number other than 0, written the
way the engine would print it: `uid` or `uid:gid`, both decimal without sign, leading zeros or
separators, within the engine's range (0 to 2^31 - 1), the uid at least 1 (a gid of 0 is allowed: it
gives no privilege the uid lacks). Anything else runs as the default user (`CONTAINER_DEFAULT_UID:GID`):
an empty user and `root` are uid 0; a *name* is resolved in the image's own /etc/passwd, where any name
can be uid 0; and the engine reads `+0`, `-0` or `00` as uid 0 too. An agent's `run_as_user`, written
in the same grammar (the API checks it with `RUN_AS_USER`), wins over the image's user; one that does not
parse (a stored config the API never checked) is ignored, so the image's rule applies.
"""

from __future__ import annotations

import re

from deploy_service.runner.errors import RunnerConfigError
from deploy_service.runner.settings import RunnerSettings

MAX_ID = 2**31 - 1
"""The largest uid or gid the engine takes (moby/sys/user refuses larger ones)."""

_ID = (
    r"(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}"
    r"|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7])"
)
RUN_AS_USER = re.compile(rf"^{_ID}(?::(?:0|{_ID}))?$")
"""`uid` or `uid:gid`, 1 <= uid <= 2^31 - 1, 0 <= gid <= 2^31 - 1, canonical decimal (use `fullmatch`)."""
RUN_AS_USER_MESSAGE = "A numeric uid (1 to 2147483647), optionally with ':' and a numeric gid (0 to 2147483647)."


def numeric_user(value: str | None) -> tuple[int, int | None] | None:
    """`(uid, gid or None)` when `value` is a non-zero numeric user in canonical form; None otherwise."""
    if value is None or RUN_AS_USER.fullmatch(value) is None:
        return None
    uid, _, gid = value.partition(":")
    return int(uid), int(gid) if gid else None


def effective_user(image_user: str | None, *, run_as_user: str | None, default: str) -> str:
    """The `user` a replica's container gets.

    Args:
        image_user: the image's `Config.User` (None or "" when it sets none).
        run_as_user: the agent's choice, if any; it wins when it is a non-zero numeric user.
        default: `uid:gid` for images whose user is root, a name, or not a canonical number.
    """
    for candidate in (run_as_user, image_user):
        if numeric_user(candidate) is not None:
            return str(candidate)
    return default


def check_default_user(settings: RunnerSettings) -> None:
    """Refuse a default user that is uid 0 or out of the engine's range.

    Raises:
        RunnerConfigError: `default_uid` is not 1..2^31-1 or `default_gid` not 0..2^31-1.
    """
    if not 1 <= settings.default_uid <= MAX_ID:
        raise RunnerConfigError(f"CONTAINER_DEFAULT_UID must be between 1 and {MAX_ID}, got {settings.default_uid}")
    if not 0 <= settings.default_gid <= MAX_ID:
        raise RunnerConfigError(f"CONTAINER_DEFAULT_GID must be between 0 and {MAX_ID}, got {settings.default_gid}")
