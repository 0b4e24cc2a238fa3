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
- Every build step runs within the build limits (`build_parameters`: memory without swap, a CPU quota,
  the build network), and the request carries no registry credentials but the agent's own
  (`BuildSpec.registry_auth`, for its one registry: `X-Registry-Config`); a pull likewise sends only the
  agent's login, and only to the registry it is for.
- The build's output is handed to `on_output` line by line, and the last lines travel with a
  `BuildFailed` for the user.
- A `Cancellation` stops the clone (git is killed) or the engine build (its stream is ended, and the
  engine drops a build whose connection goes): `BuildCancelled`, whatever else the break caused.
- A build the engine refuses, an error in the stream, and a deadline passed all become `BuildFailed`;
  an engine that stops answering before the deadline is left for the runner to translate.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
from docker.api.build import process_dockerfile
from docker.errors import APIError

from deploy_service.references import InvalidReference, check_repo_path, image_registry
from deploy_service.runner.base import BuildSpec, RegistryCredentials
from deploy_service.runner.cancellation import Cancellation
from deploy_service.runner.docker_client import build_registry_config, pull_auth
from deploy_service.runner.docker_common import UNREACHABLE, explanation
from deploy_service.runner.docker_streams import DeadlineClient, OutputLines
from deploy_service.runner.errors import BuildCancelled, BuildFailed, ImageUnavailable
from deploy_service.runner.git import clone, head_commit
from deploy_service.runner.settings import RunnerSettings

__all__ = ["build_from_source", "build_parameters", "pull_image"]

CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000
"""The engine refuses a CFS quota under 1 ms."""


def pull_image(
    api: Any, ref: str, *, timeout: float, settings: RunnerSettings, auth: RegistryCredentials | None = None
) -> None:
    """Pull `ref` onto the engine of `api` within `timeout` seconds (`settings`: how to reach the engine).

    `auth` (the agent's login) goes with the pull only when it is for the image's registry.

    Raises:
        ImageUnavailable: the engine refused or failed the pull, or it timed out.
    """
    repository, tag = docker.utils.parse_repository_tag(ref)
    auth_config = pull_auth(auth, registry=image_registry(ref))
    stream = DeadlineClient(settings, api.api_version, time.monotonic() + timeout)
    try:
        pulled = stream.api.pull(repository, tag=tag or "latest", stream=True, decode=True, auth_config=auth_config)
        for chunk in pulled:
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
    cancel: Cancellation | None = None,
) -> str | None:
    """Clone `spec`'s branch (or its `commit`), build it as `spec.tag` on the engine of `api`; the commit built.

    Args:
        api: the runner's low-level client (its API version is reused for the build's own client).
        spec: what to clone and build.
        clone_timeout: seconds the clone may take.
        build_timeout: seconds the engine build may take.
        on_output: called with each line of clone and build output, on the calling thread.
        settings: the runner's settings (how the build's own client reaches the engine, the build limits).
        cancel: stops the clone or the engine build when cancelled.

    Raises:
        BuildFailed: the clone, the paths or the build failed, the clone outgrew `GIT_MAX_REPO_MB`, or the
            build timed out.
        BuildCancelled: `cancel` was cancelled.
    """
    cancel = cancel or Cancellation()
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
            max_mb=settings.git_max_repo_mb,
            cancel=cancel,
            allowed_hosts=settings.allowed_git_hosts,
            commit=spec.commit,
        )
        context, dockerfile = _build_paths(source, context=spec.context, dockerfile=spec.dockerfile)
        commit = head_commit(source)
        _build(api, context, dockerfile, spec, on_output, timeout=build_timeout, settings=settings, cancel=cancel)
        return commit
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
    cancel: Cancellation,
) -> None:
    """Run the engine build of `context` as `spec.tag`, streaming its output, within `timeout` seconds.

    A cancellation ends the build's stream at once (the engine drops the build when its connection goes).
    """
    output = OutputLines(on_output, max_bytes=settings.log_line_max_bytes)
    cancel.check()
    stream = DeadlineClient(settings, api.api_version, time.monotonic() + timeout)
    try:
        with cancel.hooked(stream.abort):
            _stream_build(stream, context, dockerfile, spec, output, timeout=timeout, settings=settings, cancel=cancel)
    except BuildCancelled as exc:
        exc.log = output.log()
        raise
    except Exception as exc:
        if cancel.cancelled:
            raise BuildCancelled(log=output.log()) from exc
        raise
    finally:
        stream.close()


def _stream_build(
    stream: DeadlineClient,
    context: str,
    dockerfile: str,
    spec: BuildSpec,
    output: OutputLines,
    *,
    timeout: float,
    settings: RunnerSettings,
    cancel: Cancellation,
) -> None:
    try:
        chunks = _post_build(
            stream.api, context, dockerfile, build_parameters(spec.tag, settings), registry_auth=spec.registry_auth
        )
        cancel.check()
        for chunk in chunks:
            cancel.check()
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
        cancel.check()
        output.flush()
    except APIError as exc:
        raise BuildFailed(f"The engine refused the build: {explanation(exc)}", log=output.log()) from exc
    except UNREACHABLE as exc:
        if stream.expired():
            raise BuildFailed(f"build timed out after {timeout:g}s", log=output.log()) from exc
        raise


def build_parameters(tag: str, settings: RunnerSettings) -> dict[str, Any]:
    """The engine's `/build` query: the tag, no pull, intermediate containers removed, and the build limits.

    Each build step's container gets `BUILD_MEMORY_MB` of memory and no swap (memory + swap = memory),
    `BUILD_CPUS` cores as a CFS quota, and the `BUILD_NETWORK`.
    """
    memory = settings.build_memory_mb * 1024 * 1024
    return {
        "t": tag,
        "q": False,
        "nocache": False,
        "rm": True,
        "forcerm": True,
        "pull": False,
        "memory": memory,
        "memswap": memory,
        "cpuperiod": CPU_PERIOD_US,
        "cpuquota": max(int(settings.build_cpus * CPU_PERIOD_US), MIN_CPU_QUOTA_US),
        "networkmode": settings.build_network,
    }


def _post_build(
    api: Any,
    context: str,
    dockerfile: str,
    parameters: dict[str, Any],
    *,
    registry_auth: RegistryCredentials | None = None,
) -> Iterator[Any]:
    """POST `/build` with `context` (as the SDK's `build` packs it: `.dockerignore` applied) and `parameters`.

    The SDK's `build` is not used because it can send neither a CPU quota (its `container_limits`
    accepts memory, memswap, cpushares and cpusetcpus only) nor a build without the registry
    credentials of the machine's docker config (`X-Registry-Config`, see `docker_client`), nor one with
    only the agent's own: `X-Registry-Config` here holds `registry_auth` alone, or is not sent.
    """
    exclude = _dockerignore(context)
    entry = process_dockerfile(dockerfile, context)
    archive = docker.utils.tar(context, exclude=exclude, dockerfile=entry)
    try:
        response = api._post(
            api._url("/build"),
            data=archive,
            params={**parameters, "dockerfile": entry[0]},
            headers={"Content-Type": "application/tar", **build_registry_config(registry_auth)},
            stream=True,
            timeout=None,
        )
    finally:
        archive.close()
    chunks: Iterator[Any] = api._stream_helper(response, decode=True)
    return chunks


def _dockerignore(context: str) -> list[str] | None:
    """The patterns of the context's `.dockerignore`, as the SDK reads them (None without one)."""
    path = os.path.join(context, ".dockerignore")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as file:
        return [line.strip() for line in file.read().splitlines() if line.strip() and not line.strip().startswith("#")]
