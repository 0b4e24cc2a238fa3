"""The Docker backend of the runner, on the docker SDK (engine API >= 1.41).

Design notes:

- One `DockerClient` per runner, created lazily on first use (construction asks the engine for its
  API version, so a down engine must not break `create_app`; a failed construction is retried on the
  next call). Its connection pool is sized for the reconciler's worker threads plus API requests;
  requests' `Session` is safe for this use from several threads.
- Long streaming calls (pull, build) get a short-lived client of their own, whose every socket read
  is bounded by the call's deadline; closing it cancels the work in the engine and never disturbs the
  shared pool (see `_DeadlineClient`).
- Errors are translated at this boundary: an engine that cannot be reached (connection refused, socket
  missing, timeouts, a failed client construction) becomes `EngineUnavailable`; everything the engine
  *refused* becomes one of the runner's own errors with the engine's explanation.
- Every container gets the same hardening (no privileges, no capabilities, no new privileges, a pids
  limit, a read-only root with a small tmpfs at /tmp, bounded json-file logs, no mounts, no restart
  policy, a non-root user). The reconciler, not the engine, restarts replicas, so it can count and
  back off.
- `list_replicas` is one engine call: everything it reports is in the labels (including the port in
  host mode, which the list endpoint cannot otherwise show) or in the list's own fields.
- The managed label's value is `ENGINE_NAMESPACE` (default `deploy-service`): a runner sees, adopts and lists
  only its namespace's containers, so two services (or a test run) can share one engine.
- Logs are read from the low-level endpoint and demultiplexed here: the SDK's streaming helpers drop
  the stream id of each frame, and the caller wants to know stdout from stderr.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import docker
import requests
import urllib3
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from marshmallow import ValidationError

from deploy_service.errors import ConfigError, EngineUnavailable
from deploy_service.runner.base import (
    LABEL_AGENT,
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_MANAGED,
    LABEL_REPLICA,
    BuildFailed,
    BuildSpec,
    ExitInfo,
    ImageInfo,
    ImageUnavailable,
    LogLine,
    ReplicaInfo,
    ReplicaSpec,
    ReplicaStartFailed,
    Runner,
    RunnerError,
    Stats,
)
from deploy_service.runner.git import clone
from deploy_service.schemas.validators import validate_image, validate_repo_path

__all__ = ["LABEL_PORT", "DockerRunner", "parse_engine_time"]

log = logging.getLogger(__name__)

LABEL_PORT = "deploy-service.port"
"""The container port the replica listens on (host mode: also its host port)."""

POOL_SIZE = 32
FALLBACK_USER = "65534:65534"
BUILD_LOG_TAIL_LINES = 100
PULL_TIMEOUT_SECONDS = 600.0

_UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
_ENGINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
_LOG_TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ")
_EXITED_STATUS = re.compile(r"^Exited \((-?\d+)\)")
_STREAMS = {1: "stdout", 2: "stderr"}


def parse_engine_time(value: str | None) -> datetime | None:
    """An engine RFC3339Nano time as an aware UTC datetime (nanoseconds truncated); None for zero/unset."""
    match = _ENGINE_TIME.match(value or "")
    if match is None or match.group(1).startswith("0001-01-01"):
        return None
    seconds, fraction, zone = match.groups()
    iso = f"{seconds}.{(fraction or '0')[:6].ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}"
    return datetime.fromisoformat(iso).astimezone(UTC)


def _explanation(exc: APIError) -> str:
    return str(exc.explanation or exc)


def _user_for_image(configured: str | None) -> str:
    """The image's USER when it names a non-root user, else nobody."""
    user = (configured or "").strip()
    name = user.split(":", 1)[0]
    if not name or name == "root" or (name.isdigit() and int(name) == 0):
        return FALLBACK_USER
    return user


def _set_read_timeout(response: requests.Response, seconds: float | None) -> None:
    """Bound (or, with None, unbound) further socket reads of a streamed response, where reachable."""
    stream: Any = response.raw
    try:
        raw = stream._fp.fp.raw
    except AttributeError:
        return
    sock: Any
    for sock in (raw, getattr(raw, "_sock", None)):
        if hasattr(sock, "settimeout"):
            sock.settimeout(seconds)


class _DeadlineClient:
    """A one-off API client for a single long streaming call that must end by a deadline.

    Every request it sends is bounded by the time left (the SDK sends pulls and builds with no
    timeout), and `tighten()` re-bounds the open response's socket as the deadline nears, so no read
    can block past it. Closing it drops the connection, which makes the engine cancel the work.
    """

    def __init__(self, version: str, deadline: float) -> None:
        self.deadline = deadline
        self.client = docker.from_env(version=version, timeout=max(self.remaining(), 1.0), max_pool_size=1)
        self.api = self.client.api
        self._responses: list[requests.Response] = []
        send = self.api.send

        def bounded_send(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            kwargs["timeout"] = max(self.remaining(), 0.01)
            response: requests.Response = send(request, **kwargs)
            return response

        self.api.send = bounded_send
        self.api.hooks["response"].append(self._capture)

    def _capture(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._responses.append(response)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def tighten(self) -> None:
        for response in self._responses:
            _set_read_timeout(response, max(self.remaining(), 0.01))

    def close(self) -> None:
        for response in self._responses:
            response.close()
        self.client.close()


class _OutputLines:
    """Build output as whole lines for `on_output` (a chunk may end mid-line); the last ones kept for errors."""

    def __init__(self, on_output: Callable[[str], None]) -> None:
        self.on_output = on_output
        self.partial = ""
        self.tail: deque[str] = deque(maxlen=BUILD_LOG_TAIL_LINES)

    def line(self, text: str) -> None:
        self.flush()
        self._emit(text)

    def feed(self, text: str) -> None:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self._emit(line.removesuffix("\r"))

    def flush(self) -> None:
        if self.partial:
            partial, self.partial = self.partial, ""
            self._emit(partial)

    def log(self) -> str:
        self.flush()
        return "\n".join(self.tail)

    def _emit(self, text: str) -> None:
        self.tail.append(text)
        self.on_output(text)


class _LineAssembler:
    """Turns the timestamped frames of one stream into whole lines, keeping a partial line until completed."""

    def __init__(self) -> None:
        self.pending = b""
        self.timestamp: datetime | None = None
        self.open = False

    def feed(self, data: bytes) -> Iterator[tuple[datetime | None, bytes]]:
        stamp = None
        match = _LOG_TIMESTAMP.match(data)
        if match is not None:
            stamp = parse_engine_time(match.group(1).decode())
            data = data[match.end() :]
        while data:
            if not self.open:
                self.timestamp, self.open = stamp, True
            cut = data.find(b"\n")
            if cut < 0:
                self.pending += data
                return
            yield self.timestamp, self.pending + data[:cut]
            self.pending, self.open = b"", False
            data = data[cut + 1 :]

    def flush(self) -> Iterator[tuple[datetime | None, bytes]]:
        if self.open:
            yield self.timestamp, self.pending
        self.pending, self.open = b"", False


def _read_exactly(raw: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = raw.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _frames(response: requests.Response) -> Iterator[tuple[int, bytes]]:
    """The (stream id, payload) frames of a non-TTY attach/logs stream."""
    while True:
        header = _read_exactly(response.raw, 8)
        if len(header) < 8:
            return
        stream_id, length = struct.unpack(">BxxxL", header)
        payload = _read_exactly(response.raw, length)
        if len(payload) < length:
            return
        yield stream_id, payload


class DockerRunner(Runner):
    """Runs replicas as containers of the Docker engine named by `DOCKER_HOST` (or the local socket)."""

    name = "docker"

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = config or {}
        self._network_setting = str(config.get("DOCKER_NETWORK_MODE", "auto")).strip().lower()
        self._timeout = float(config.get("DOCKER_TIMEOUT", 30.0))
        self._pids_limit = int(config.get("CONTAINER_PIDS_LIMIT", 256))
        self._log_max_size = str(config.get("CONTAINER_LOG_MAX_SIZE", "10m"))
        self._log_max_file = int(config.get("CONTAINER_LOG_MAX_FILE", 3))
        self._tmpfs_mb = int(config.get("CONTAINER_TMPFS_SIZE_MB", 64))
        self._stop_timeout = float(config.get("CONTAINER_STOP_TIMEOUT", 10.0))
        self._build_timeout = float(config.get("BUILD_TIMEOUT_SECONDS", 900.0))
        self._clone_timeout = float(config.get("GIT_CLONE_TIMEOUT_SECONDS", 120.0))
        self._namespace = str(config.get("ENGINE_NAMESPACE") or "deploy-service")
        self._pull_timeout = float(config.get("PULL_TIMEOUT_SECONDS", PULL_TIMEOUT_SECONDS))
        if self._network_setting not in {"auto", "bridge", "host"}:
            raise ConfigError("DOCKER_NETWORK_MODE must be auto, bridge or host")
        self._lock = threading.Lock()
        self._client: Any = None
        self._network_mode: str | None = None if self._network_setting == "auto" else self._network_setting

    # -- plumbing ------------------------------------------------------------------------------

    def _api(self) -> Any:
        """The shared low-level client, created on first use.

        Raises:
            EngineUnavailable: the client cannot be created (the engine does not answer).
        """
        with self._lock:
            if self._client is None:
                try:
                    self._client = docker.from_env(timeout=self._timeout, max_pool_size=POOL_SIZE)
                except DockerException as exc:
                    log.warning("cannot create the container engine client: %s", exc)
                    raise EngineUnavailable("The container engine cannot be reached.") from exc
            return self._client.api

    @contextlib.contextmanager
    def _engine(self) -> Iterator[Any]:
        """Yield the low-level client; connection failures and timeouts become `EngineUnavailable`."""
        api = self._api()
        try:
            yield api
        except _UNREACHABLE as exc:
            log.warning("container engine unreachable: %s", exc)
            raise EngineUnavailable(f"The container engine cannot be reached ({type(exc).__name__}).") from exc

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- engine -------------------------------------------------------------------------------

    def ping(self) -> None:
        with self._engine() as api:
            try:
                api.ping()
            except APIError as exc:
                raise EngineUnavailable(f"The container engine is not healthy: {_explanation(exc)}") from exc

    def network_mode(self) -> str:
        if self._network_mode is None:
            with self._engine() as api:
                names = {network.get("Name") for network in api.networks(names=["bridge"])}
            self._network_mode = "bridge" if "bridge" in names else "host"
        return self._network_mode

    # -- images -------------------------------------------------------------------------------

    def local_image(self, ref: str) -> ImageInfo | None:
        with self._engine() as api:
            try:
                local = self._inspect_image(api, ref)
            except ImageUnavailable:
                return None
        return None if local is None else ImageInfo(ref=ref, id=str(local["Id"]), source="local")

    def ensure_image(self, ref: str) -> ImageInfo:
        with self._engine() as api:
            local = self._inspect_image(api, ref)
            if local is not None:
                return ImageInfo(ref=ref, id=str(local["Id"]), source="local")
            self._pull(api, ref)
            pulled = self._inspect_image(api, ref)
        if pulled is None:
            raise ImageUnavailable(f"Image {ref!r} is not available after pulling it.")
        return ImageInfo(ref=ref, id=str(pulled["Id"]), source="pulled")

    @staticmethod
    def _inspect_image(api: Any, ref: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = api.inspect_image(ref)
        except NotFound:
            return None
        except APIError as exc:
            raise ImageUnavailable(f"Image {ref!r} cannot be used: {_explanation(exc)}") from exc
        return data

    def _pull(self, api: Any, ref: str) -> None:
        repository, tag = docker.utils.parse_repository_tag(ref)
        stream = _DeadlineClient(api.api_version, time.monotonic() + self._pull_timeout)
        try:
            for chunk in stream.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise ImageUnavailable(f"Image {ref!r} is not local and pulling it failed: {chunk['error']}")
                stream.tighten()
        except APIError as exc:
            raise ImageUnavailable(f"Image {ref!r} is not local and pulling it failed: {_explanation(exc)}") from exc
        except _UNREACHABLE as exc:
            if stream.expired():
                raise ImageUnavailable(f"Pulling image {ref!r} timed out.") from exc
            raise
        finally:
            stream.close()

    def build_image(self, spec: BuildSpec, *, on_output: Callable[[str], None]) -> ImageInfo:
        try:
            validate_image(spec.tag)
        except ValidationError as exc:
            raise BuildFailed(f"Refusing to build: {spec.tag!r} is not a valid image tag.") from exc
        with self._engine() as api:
            workdir = tempfile.mkdtemp(prefix="deploy-build-")
            try:
                source = os.path.join(workdir, "source")
                clone_timeout = min(spec.clone_timeout, self._clone_timeout)
                clone(
                    spec.git_url,
                    spec.branch,
                    source,
                    timeout=clone_timeout,
                    allow_local=spec.allow_local,
                    on_output=on_output,
                )
                context, dockerfile = _build_paths(source, context=spec.context, dockerfile=spec.dockerfile)
                self._build(api, context, dockerfile, spec, on_output)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            built = self._inspect_image(api, spec.tag)
        if built is None:
            raise BuildFailed(f"The build finished but image {spec.tag!r} does not exist.")
        return ImageInfo(ref=spec.tag, id=str(built["Id"]), source="built")

    def _build(
        self, api: Any, context: str, dockerfile: str, spec: BuildSpec, on_output: Callable[[str], None]
    ) -> None:
        timeout = min(spec.build_timeout, self._build_timeout)
        output = _OutputLines(on_output)
        stream = _DeadlineClient(api.api_version, time.monotonic() + timeout)
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
            raise BuildFailed(f"The engine refused the build: {_explanation(exc)}", log=output.log()) from exc
        except _UNREACHABLE as exc:
            if stream.expired():
                raise BuildFailed(f"build timed out after {timeout:g}s", log=output.log()) from exc
            raise
        finally:
            stream.close()

    # -- replicas -------------------------------------------------------------------------------

    def start_replica(self, spec: ReplicaSpec) -> ReplicaInfo:
        if spec.network_mode not in {"host", "bridge"}:
            raise ReplicaStartFailed(f"Unknown network mode {spec.network_mode!r}.")
        with self._engine() as api:
            image = self._inspect_image(api, spec.image)
            if image is None:
                raise ImageUnavailable(f"Image {spec.image!r} is not available on the engine.")
            user = _user_for_image((image.get("Config") or {}).get("User"))
            try:
                created = api.create_container(**self._create_arguments(api, spec, user))
                return self._start(api, str(created["Id"]), created=True)
            except ImageNotFound as exc:
                raise ImageUnavailable(f"Image {spec.image!r} is gone: {_explanation(exc)}") from exc
            except APIError as exc:
                if exc.status_code != 409:
                    raise ReplicaStartFailed(f"The engine refused the container: {_explanation(exc)}") from exc
            return self._start(api, self._adoptable(api, spec))

    def _create_arguments(self, api: Any, spec: ReplicaSpec, user: str) -> dict[str, Any]:
        bridge = spec.network_mode == "bridge"
        host_config = api.create_host_config(
            privileged=False,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            pids_limit=self._pids_limit,
            read_only=spec.read_only_rootfs,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={self._tmpfs_mb}m"},
            log_config={
                "type": "json-file",
                "config": {"max-size": self._log_max_size, "max-file": str(self._log_max_file)},
            },
            nano_cpus=int(round(spec.cpu * 1e9)),
            mem_limit=spec.memory_mb * 1024 * 1024,
            memswap_limit=spec.memory_mb * 1024 * 1024,
            restart_policy={"Name": "no"},
            network_mode="bridge" if bridge else "host",
            port_bindings={f"{spec.port}/tcp": ("127.0.0.1", None)} if bridge else None,
        )
        environment = {**spec.env, "PORT": str(spec.port), "REPLICA_INDEX": str(spec.index)}
        labels = {
            LABEL_MANAGED: self._namespace,
            LABEL_DEPLOYMENT: spec.deployment_id,
            LABEL_AGENT: spec.agent_id,
            LABEL_REPLICA: str(spec.index),
            LABEL_GENERATION: str(spec.generation),
            LABEL_PORT: str(spec.port),
        }
        return {
            "image": spec.image,
            "name": spec.name,
            "command": list(spec.command) if spec.command is not None else None,
            "environment": environment,
            "labels": labels,
            "user": user,
            "detach": True,
            "ports": [spec.port] if bridge else None,
            "stop_timeout": max(math.ceil(self._stop_timeout), 0),
            "host_config": host_config,
        }

    def _adoptable(self, api: Any, spec: ReplicaSpec) -> str:
        """The id of the existing container named like `spec`, if it is this very replica."""
        try:
            existing = api.inspect_container(spec.name)
        except NotFound as exc:
            raise ReplicaStartFailed(f"Container {spec.name} conflicts but vanished; retry.") from exc
        labels = (existing.get("Config") or {}).get("Labels") or {}
        expected = {
            LABEL_MANAGED: self._namespace,
            LABEL_DEPLOYMENT: spec.deployment_id,
            LABEL_REPLICA: str(spec.index),
            LABEL_GENERATION: str(spec.generation),
        }
        if any(labels.get(key) != value for key, value in expected.items()):
            raise ReplicaStartFailed(f"A container named {spec.name} exists and is not this replica.")
        return str(existing["Id"])

    def _start(self, api: Any, container_id: str, *, created: bool = False) -> ReplicaInfo:
        """Start the container unless it runs; a container that cannot serve is removed, not left behind."""
        data = {} if created else api.inspect_container(container_id)
        if not (data.get("State") or {}).get("Running"):
            try:
                api.start(container_id)
            except APIError as exc:
                self._discard(api, container_id)
                raise ReplicaStartFailed(f"The engine could not start the container: {_explanation(exc)}") from exc
            data = api.inspect_container(container_id)
        info = _info_from_inspect(data)
        if info is None:
            raise ReplicaStartFailed(f"Container {container_id[:12]} lost its labels.")
        if info.running and info.port is None:
            # An engine without a bridge network (dockerd --bridge=none) starts a bridge-mode container
            # anyway, with no interface and no published port: nothing could ever reach it.
            self._discard(api, container_id)
            raise ReplicaStartFailed(
                "The engine published no port for the replica (does it have a bridge network?); "
                "use DOCKER_NETWORK_MODE=host or auto."
            )
        return info

    @staticmethod
    def _discard(api: Any, container_id: str) -> None:
        with contextlib.suppress(APIError):
            api.remove_container(container_id, force=True)

    def remove_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:
        with self._engine() as api:
            try:
                api.stop(container, timeout=max(math.ceil(stop_timeout), 0))
            except NotFound:
                return
            except APIError as exc:
                log.info("stopping %s failed (%s); removing it by force", container, _explanation(exc))
            try:
                api.remove_container(container, force=True)
            except NotFound:
                return
            except APIError as exc:
                if exc.status_code == 409 and "in progress" in _explanation(exc):
                    return
                raise RunnerError(f"The engine could not remove {container}: {_explanation(exc)}") from exc

    def list_replicas(self) -> list[ReplicaInfo]:
        with self._engine() as api:
            rows = api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={self._namespace}"})
        return [info for info in map(_info_from_list, rows) if info is not None]

    def exit_info(self, container: str) -> ExitInfo:
        with self._engine() as api:
            try:
                state = api.inspect_container(container).get("State") or {}
            except NotFound as exc:
                raise RunnerError(f"No such container: {container}") from exc
        exit_code = state.get("ExitCode")
        return ExitInfo(
            exit_code=int(exit_code) if exit_code is not None else None,
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
            finished_at=parse_engine_time(state.get("FinishedAt")),
        )

    # -- observation ----------------------------------------------------------------------------

    def logs(
        self,
        container: str,
        *,
        replica: int,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """The container's lines in the engine's order, with their engine timestamps and real stream names.

        The engine stamps each line when it reads it, so lines are oldest first; stdout and stderr are
        separate pipes, so lines written close together on both may come back in either order.
        The request is made before this returns (a missing container or a down engine raises here);
        the lines are read lazily. Containers must be non-TTY (ours always are).

        Raises:
            RunnerError: no such container.
        """
        params: dict[str, Any] = {
            "stdout": 1,
            "stderr": 1,
            "timestamps": 1,
            "follow": 1 if follow else 0,
            "tail": "all" if tail is None else max(int(tail), 0),
        }
        if since is not None:
            params["since"] = f"{since.timestamp():.6f}"
        with self._engine() as api:
            response = api._get(api._url("/containers/{0}/logs", container), params=params, stream=True)
            try:
                api._raise_for_status(response)
            except NotFound as exc:
                response.close()
                raise RunnerError(f"No such container: {container}") from exc
            except APIError as exc:
                response.close()
                raise RunnerError(f"The engine refused the logs of {container}: {_explanation(exc)}") from exc
        if follow:
            _set_read_timeout(response, None)
        return self._log_lines(response, replica)

    def _log_lines(self, response: requests.Response, replica: int) -> Iterator[LogLine]:
        assemblers = {stream_id: _LineAssembler() for stream_id in _STREAMS}

        def line(stream_id: int, stamp: datetime | None, data: bytes) -> LogLine:
            text = data.decode("utf-8", errors="replace").removesuffix("\r")
            return LogLine(timestamp=stamp, replica=replica, stream=_STREAMS[stream_id], line=text)

        try:
            with self._engine():
                for stream_id, payload in _frames(response):
                    if stream_id in assemblers:
                        for stamp, data in assemblers[stream_id].feed(payload):
                            yield line(stream_id, stamp, data)
            for stream_id, assembler in assemblers.items():
                for stamp, data in assembler.flush():
                    yield line(stream_id, stamp, data)
        finally:
            response.close()

    def stats(self, container: str) -> Stats:
        with self._engine() as api:
            try:
                data = api.stats(container, stream=False, one_shot=True)
            except NotFound as exc:
                raise RunnerError(f"No such container: {container}") from exc
        memory = data.get("memory_stats") or {}
        detail = memory.get("stats") or {}
        cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        usage = int(memory.get("usage") or 0)
        cpu = data.get("cpu_stats") or {}
        cpu_usage = cpu.get("cpu_usage") or {}
        online = cpu.get("online_cpus") or len(cpu_usage.get("percpu_usage") or []) or 1
        return Stats(
            memory_bytes=max(usage - int(cache or 0), 0),
            memory_limit_bytes=int(memory.get("limit") or 0),
            cpu_total_ns=int(cpu_usage.get("total_usage") or 0),
            system_cpu_ns=int(cpu.get("system_cpu_usage") or 0),
            online_cpus=int(online),
            sampled_at=datetime.now(UTC),
        )


def _build_paths(source: str, *, context: str, dockerfile: str) -> tuple[str, str]:
    """The resolved build context directory and Dockerfile (both relative to the clone's root).

    Raises:
        BuildFailed: a path is malformed, escapes the clone (also through a symlink), or is missing.
    """
    root = os.path.realpath(source)
    resolved = []
    for label, relative in (("context", context), ("dockerfile", dockerfile)):
        try:
            validate_repo_path(relative)
        except ValidationError as exc:
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


def _identity(labels: Mapping[str, str] | None) -> tuple[str, str, int, int] | None:
    """(deployment, agent, index, generation) from a container's labels; None when incomplete."""
    labels = labels or {}
    try:
        return (
            labels[LABEL_DEPLOYMENT],
            labels[LABEL_AGENT],
            int(labels[LABEL_REPLICA]),
            int(labels[LABEL_GENERATION]),
        )
    except (KeyError, ValueError):
        return None


def _label_port(labels: Mapping[str, str]) -> int | None:
    try:
        return int(labels[LABEL_PORT])
    except (KeyError, ValueError):
        return None


def _info_from_list(row: Mapping[str, Any]) -> ReplicaInfo | None:
    labels = row.get("Labels") or {}
    identity = _identity(labels)
    if identity is None:
        return None
    deployment_id, agent_id, index, generation = identity
    state = str(row.get("State") or "")
    exit_match = _EXITED_STATUS.match(str(row.get("Status") or ""))
    port = _label_port(labels)
    if (row.get("HostConfig") or {}).get("NetworkMode") != "host":
        published = [p for p in row.get("Ports") or [] if p.get("PrivatePort") == port and p.get("PublicPort")]
        port = int(published[0]["PublicPort"]) if published else None
    created = row.get("Created")
    return ReplicaInfo(
        container_id=str(row["Id"]),
        name=str((row.get("Names") or ["/"])[0]).lstrip("/"),
        deployment_id=deployment_id,
        agent_id=agent_id,
        index=index,
        generation=generation,
        state=state,
        exit_code=int(exit_match.group(1)) if exit_match and state == "exited" else None,
        port=port,
        created_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else None,
    )


def _info_from_inspect(data: Mapping[str, Any]) -> ReplicaInfo | None:
    labels = (data.get("Config") or {}).get("Labels") or {}
    identity = _identity(labels)
    if identity is None:
        return None
    deployment_id, agent_id, index, generation = identity
    state = data.get("State") or {}
    status = str(state.get("Status") or "")
    port = _label_port(labels)
    if (data.get("HostConfig") or {}).get("NetworkMode") != "host":
        bindings = ((data.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
        port = int(bindings[0]["HostPort"]) if bindings and bindings[0].get("HostPort") else None
    return ReplicaInfo(
        container_id=str(data["Id"]),
        name=str(data.get("Name") or "").lstrip("/"),
        deployment_id=deployment_id,
        agent_id=agent_id,
        index=index,
        generation=generation,
        state=status,
        exit_code=int(state["ExitCode"]) if status in {"exited", "dead"} and "ExitCode" in state else None,
        port=port,
        created_at=parse_engine_time(data.get("Created")),
    )
