"""Getting an image onto the engine: pulling it by reference, or building it from an agent's git source.

Both are long streaming calls, each on a `DeadlineClient` of its own so that it ends by its deadline.
The runner decides when to call them (it inspects first, validates the tag, owns the shared client)
and translates an engine that stops answering; these functions do the work:

- A pull reports its failures, including an error inside the stream and a deadline passed, as
  `ImageUnavailable`.

- The source is cloned (see `runner.git`) into a fresh temporary directory, which is removed however
  the build ends.
- The context and Dockerfile come from users, so they are re-validated and resolved against the clone
  (symlinks included) before the engine sees them: nothing outside the repository can be sent as
  build context or read as a Dockerfile (`_build_paths`).
- The build's output is handed to `on_output` line by line, and the last lines travel with a
  `BuildFailed` for the user.
- A build the engine refuses, an error in the stream, and a deadline passed all become `BuildFailed`;
  an engine that stops answering before the deadline is left for the runner to translate.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import docker
from docker.errors import APIError

from deploy_service.references import InvalidReference, check_repo_path
from deploy_service.runner.base import BuildSpec
from deploy_service.runner.docker_common import UNREACHABLE, explanation
from deploy_service.runner.docker_streams import DeadlineClient, OutputLines
from deploy_service.runner.errors import BuildFailed, ImageUnavailable
from deploy_service.runner.git import clone
from deploy_service.runner.settings import RunnerSettings

__all__ = ["build_from_source", "pull_image"]


def pull_image(api: Any, ref: str, *, timeout: float, settings: RunnerSettings) -> None:
    """Pull `ref` onto the engine of `api` within `timeout` seconds (`settings`: how to reach the engine).

    Raises:
        ImageUnavailable: the engine refused or failed the pull, or it timed out.
    """
    repository, tag = docker.utils.parse_repository_tag(ref)
    stream = DeadlineClient(settings, api.api_version, time.monotonic() + timeout)
    try:
        for chunk in stream.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if isinstance(chunk, dict) and chunk.get("error"):
                raise ImageUnavailable(f"Image {ref!r} is not local and pulling it failed: {chunk['error']}")
            stream.tighten()
    except APIError as exc:
        raise ImageUnavailable(f"Image {ref!r} is not local and pulling it failed: {explanation(exc)}") from exc
    except UNREACHABLE as exc:
        if stream.expired():
            raise ImageUnavailable(f"Pulling image {ref!r} timed out.") from exc
        raise
    finally:
        stream.close()


def build_from_source(
    api: Any,
    spec: BuildSpec,
    *,
    clone_timeout: float,
    build_timeout: float,
    on_output: Callable[[str], None],
    settings: RunnerSettings,
) -> None:
    """Clone `spec`'s branch and build it as `spec.tag` on the engine of `api`.

    Args:
        api: the runner's low-level client (its API version is reused for the build's own client).
        spec: what to clone and build.
        clone_timeout: seconds the clone may take.
        build_timeout: seconds the engine build may take.
        on_output: called with each line of clone and build output, on the calling thread.
        settings: the runner's settings (how the build's own client reaches the engine).

    Raises:
        BuildFailed: the clone, the paths or the build failed, or the build timed out.
    """
    workdir = tempfile.mkdtemp(prefix="deploy-build-")
    try:
        source = os.path.join(workdir, "source")
        clone(
            spec.git_url,
            spec.branch,
            source,
            timeout=clone_timeout,
            allow_local=spec.allow_local,
            on_output=on_output,
            line_max_bytes=settings.log_line_max_bytes,
        )
        context, dockerfile = _build_paths(source, context=spec.context, dockerfile=spec.dockerfile)
        _build(api, context, dockerfile, spec, on_output, timeout=build_timeout, settings=settings)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _build_paths(source: str, *, context: str, dockerfile: str) -> tuple[str, str]:
    """The resolved build context directory and Dockerfile (both relative to the clone's root).

    Raises:
        BuildFailed: a path is malformed, escapes the clone (also through a symlink), or is missing.
    """
    root = os.path.realpath(source)
    resolved = []
    for label, relative in (("context", context), ("dockerfile", dockerfile)):
        try:
            check_repo_path(relative)
        except InvalidReference as exc:
            raise BuildFailed(f"Refusing to build: {label} {relative!r} is not a path inside the repository.") from exc
        path = os.path.realpath(os.path.join(root, relative))
        if path != root and not path.startswith(root + os.sep):
            raise BuildFailed(f"Refusing to build: {label} {relative!r} resolves outside the repository.")
        resolved.append(path)
    context_dir, dockerfile_path = resolved
    if not os.path.isdir(context_dir):
        raise BuildFailed(f"The build context {context!r} is not a directory in the repository.")
    if not os.path.isfile(dockerfile_path):
        raise BuildFailed(f"The Dockerfile {dockerfile!r} does not exist in the repository.")
    return context_dir, dockerfile_path


def _build(
    api: Any,
    context: str,
    dockerfile: str,
    spec: BuildSpec,
    on_output: Callable[[str], None],
    *,
    timeout: float,
    settings: RunnerSettings,
) -> None:
    """Run the engine build of `context` as `spec.tag`, streaming its output, within `timeout` seconds."""
    output = OutputLines(on_output, max_bytes=settings.log_line_max_bytes)
    stream = DeadlineClient(settings, api.api_version, time.monotonic() + timeout)
    try:
        chunks = stream.api.build(
            path=context,
            dockerfile=dockerfile,
            tag=spec.tag,
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
        )
        for chunk in chunks:
            stream.tighten()
            if not isinstance(chunk, dict):
                continue
            output.feed(str(chunk.get("stream") or ""))
            if chunk.get("status"):
                output.line(str(chunk["status"]))
            if chunk.get("error"):
                output.line(str(chunk["error"]).strip())
                raise BuildFailed(f"The image build failed: {chunk['error']}".strip(), log=output.log())
            if stream.expired():
                raise BuildFailed(f"build timed out after {timeout:g}s", log=output.log())
        output.flush()
    except APIError as exc:
        raise BuildFailed(f"The engine refused the build: {explanation(exc)}", log=output.log()) from exc
    except UNREACHABLE as exc:
        if stream.expired():
            raise BuildFailed(f"build timed out after {timeout:g}s", log=output.log()) from exc
        raise
    finally:
        stream.close()
