"""The runner's own errors: what a backend raises, in the runner's terms, and nothing of HTTP.

The runner sits below the service (it imports nothing of Flask, SQLAlchemy, marshmallow or the
service's modules), so it cannot raise the service's errors. It raises these instead, and
`deploy_service.errors` is the one place that decides what each means to a client (an
`EngineUnavailable` is a 503 `engine_unavailable`) or at startup (a `RunnerConfigError` is the
service's `ConfigError`: the process does not start).

They are typed by what the caller should do:

- `EngineUnavailable`: the engine did not answer; nothing is wrong with the request, try again later.
- `ImageUnavailable`, `BuildFailed`, `ReplicaStartFailed` (and a bare `RunnerError`): the engine
  answered and the operation failed for a reason the user should read (`message`, and `log` for
  the tail of a build's output).
- `ContainerGone`: the engine has no such container (removed, or never ours); a reader of its output
  has nothing more to read there.
- `BuildCancelled` (a `BuildFailed`): the caller cancelled the build; nothing failed.
- `RunnerConfigError`: a backend refused its settings when it was constructed.

Every one is a `RunnerError`, so a caller that wants "the engine answered and refused" must catch
`EngineUnavailable` first.
"""

from __future__ import annotations

__all__ = [
    "BuildCancelled",
    "BuildFailed",
    "ContainerGone",
    "EngineUnavailable",
    "ImageUnavailable",
    "ReplicaStartFailed",
    "RunnerConfigError",
    "RunnerError",
]


class RunnerError(Exception):
    """A runner operation failed; `message` is for the user, `log` the output that explains it (if any)."""

    default_message = "The runner operation failed."

    def __init__(self, message: str | None = None, *, log: str = "") -> None:
        self.message = message or self.default_message
        self.log = log
        super().__init__(self.message)


class EngineUnavailable(RunnerError):
    """The container engine could not be reached (refused connection, missing socket, timeout, unhealthy)."""

    default_message = "The container engine cannot be reached."


class ImageUnavailable(RunnerError):
    """The image is neither present locally nor pullable."""


class BuildFailed(RunnerError):
    """Cloning or building a git source failed (or timed out); `log` holds the tail of the output."""


class ContainerGone(RunnerError):
    """The engine has no such container (nor, on Swarm, a task of ours that ran it)."""


class BuildCancelled(BuildFailed):
    """The build was cancelled (its deployment was stopped or deleted): git was killed, the engine build dropped."""

    default_message = "The build was cancelled."


class ReplicaStartFailed(RunnerError):
    """The engine refused to create or start a container (bad command, resources, ...)."""


class RunnerConfigError(RunnerError):
    """A backend refused a setting it was constructed with (an unknown backend, a network mode it cannot use)."""
