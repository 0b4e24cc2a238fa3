"""The Docker backend of the runner, on the docker SDK (engine API >= 1.41): `DockerRunner`.

Design notes:

- One `DockerClient` per runner, created lazily on first use by `docker_client.engine_client` (construction
  asks the engine for its API version, so a down engine must not break `create_app`; a failed construction,
  or an SSH connection found dead, is made again on the next call). Its connection pool is sized for the
  reconciler's worker threads plus API requests (over SSH, for sshd's sessions: see `docker_client`);
  requests' `Session` is safe for this use from several threads.
- Errors are translated at this boundary: an engine that cannot be reached (connection refused, socket
  missing, timeouts, a failed client construction) becomes `EngineUnavailable`; everything the engine
  *refused* becomes one of the runner's own errors with the engine's explanation.
- Every container gets the same hardening (no privileges, no capabilities, no new privileges, a pids
  limit, a read-only root with a small tmpfs at /tmp, bounded json-file logs, no mounts, no restart
  policy, never uid 0: `runner.users`). The reconciler, not the engine, restarts replicas, so it can count and
  back off.
- Bridge mode gives each deployment a user-defined bridge network of its own (`network_name`, labelled
  like its containers), made before its first replica starts; its replicas join that network only, and
  publish the agent's port on `PUBLISH_HOST` only, so replicas of two deployments share no network. The
  reconciler removes the network with the deployment's last container (`remove_network`) and sweeps
  labelled networks whose deployment is gone (`list_networks`).
- Host networking shares the host's network with every replica (single-tenant); where it is not allowed
  (`host_network_allowed`: production without `HOST_NETWORK_ALLOWED`), `auto` resolving to host makes
  every start refuse with `RunnerConfigError` (`check_networking`), and readiness says why.
- `list_replicas` is one engine call: everything it reports is in the labels (including the port in
  host mode, which the list endpoint cannot otherwise show) or in the list's own fields.
- The managed label's value is `ENGINE_NAMESPACE` (default `deploy-service`): a runner sees, adopts and lists
  only its namespace's containers, so two services (or a test run) can share one engine.

Engine calls are made here; the work around them lives beside it: `docker_images` (pull, clone + build),
`docker_streams` (log demultiplexing, deadline-bounded clients), `docker_records` (engine JSON as our value
objects) and `docker_common`. `LABEL_PORT` and `parse_engine_time` are re-exported from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http import HTTPStatus
from typing import Any

from docker.errors import APIError, ImageNotFound, NotFound

from deploy_service.references import InvalidReference, check_image_reference
from deploy_service.runner import git
from deploy_service.runner.base import (
    LABEL_AGENT,
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_MANAGED,
    LABEL_REPLICA,
    BuildSpec,
    Cancellation,
    ExitInfo,
    ImageInfo,
    LogLine,
    RegistryCredentials,
    ReplicaInfo,
    ReplicaSpec,
    Runner,
    Stats,
)
from deploy_service.runner.docker_client import connection_lost, engine_client
from deploy_service.runner.docker_common import (
    UNREACHABLE,
    engine_date,
    explanation,
    open_stream,
    parse_engine_time,
)
from deploy_service.runner.docker_images import build_from_source, pull_image
from deploy_service.runner.docker_records import (
    LABEL_PORT,
    exit_info_from_state,
    info_from_inspect,
    info_from_list,
    stats_from_sample,
)
from deploy_service.runner.docker_streams import log_lines, set_read_timeout
from deploy_service.runner.errors import (
    BuildFailed,
    ContainerGone,
    EngineUnavailable,
    ImageUnavailable,
    ReplicaStartFailed,
    RunnerConfigError,
    RunnerError,
)
from deploy_service.runner.settings import BUILD_NETWORKS, RunnerSettings
from deploy_service.runner.users import check_default_user, effective_user

__all__ = ["LABEL_PORT", "DockerRunner", "parse_engine_time"]

log = logging.getLogger(__name__)

POOL_SIZE = 32
EXIT_WATCH_READ_SECONDS = 5.0
"""How long the exit watcher's event stream may stay quiet before it is opened again (`watch_exits`)."""
REMOVAL_WAIT_SECONDS = 10.0
HOST_NETWORK_REFUSED = (
    "Host networking is refused in production: it shares the host's network with every replica (one tenant "
    "only). This engine has no `bridge` network, so DOCKER_NETWORK_MODE=auto resolves to host: give the engine "
    "a bridge network (or set DOCKER_NETWORK_MODE=bridge), or set HOST_NETWORK_ALLOWED=true for a single-tenant "
    "service."
)


class DockerRunner(Runner):
    """Runs replicas as containers of the Docker engine named by `DOCKER_HOST` (or the local socket)."""

    name = "docker"

    def __init__(self, settings: RunnerSettings | None = None) -> None:
        """Configure the backend; no engine call is made.

        Raises:
            RunnerConfigError: a network mode other than auto, bridge or host; a build network other than default
                or none; a default user that is uid 0.
        """
        self.settings = settings = settings or RunnerSettings()
        check_default_user(settings)
        self._network_setting = settings.network_mode
        self._timeout = settings.docker_timeout
        self._pids_limit = settings.pids_limit
        self._log_max_size = settings.log_max_size
        self._log_max_file = settings.log_max_file
        self._tmpfs_mb = settings.tmpfs_mb
        self._stop_timeout = settings.stop_timeout
        self._build_timeout = settings.build_timeout
        self._clone_timeout = settings.clone_timeout
        self._namespace = settings.namespace
        self._pull_timeout = settings.pull_timeout
        if self._network_setting not in {"auto", "bridge", "host"}:
            raise RunnerConfigError("DOCKER_NETWORK_MODE must be auto, bridge or host")
        if settings.build_network not in BUILD_NETWORKS:
            raise RunnerConfigError("BUILD_NETWORK must be default or none")
        self._lock = threading.Lock()
        self._network_lock = threading.Lock()
        self._client: Any = None
        self._network_mode: str | None = None if self._network_setting == "auto" else self._network_setting

    # -- plumbing ------------------------------------------------------------------------------

    def _api(self) -> Any:
        """The shared low-level client, created on first use.

        Raises:
            EngineUnavailable: the client cannot be created (the engine does not answer, or over SSH the
                connection is refused: unknown host key, key not accepted).
        """
        with self._lock:
            if self._client is not None and connection_lost(self._client):
                log.warning("the SSH connection to the container engine was lost; connecting again")
                stale, self._client = self._client, None
                stale.close()
            if self._client is None:
                self._client = engine_client(self.settings, timeout=self._timeout, max_pool_size=POOL_SIZE)
            return self._client.api

    @contextlib.contextmanager
    def _engine(self) -> Iterator[Any]:
        """Yield the low-level client; connection failures and timeouts become `EngineUnavailable`."""
        api = self._api()
        try:
            yield api
        except UNREACHABLE as exc:
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
                raise EngineUnavailable(f"The container engine is not healthy: {explanation(exc)}") from exc

    def engine_version(self) -> str | None:
        with self._engine() as api:
            try:
                version = api.version().get("Version")
            except APIError as exc:
                raise EngineUnavailable(f"The container engine is not healthy: {explanation(exc)}") from exc
        return str(version) if version else None

    def network_mode(self) -> str:
        if self._network_mode is None:
            with self._engine() as api:
                names = {network.get("Name") for network in api.networks(names=["bridge"])}
            self._network_mode = "bridge" if "bridge" in names else "host"
        return self._network_mode

    def check_networking(self) -> None:
        """Refuse host networking where it is not allowed (it shares the host's network with every replica).

        Raises:
            RunnerConfigError: the replicas would get host networking and `host_network_allowed` is false.
            EngineUnavailable: resolving `auto` needed the engine, which did not answer.
        """
        if not self.settings.host_network_allowed and self.network_mode() == "host":
            raise RunnerConfigError(HOST_NETWORK_REFUSED)

    # -- networks -------------------------------------------------------------------------------

    def network_name(self, deployment_id: str) -> str:
        """The name of the deployment's own bridge network (`<namespace>-d<deployment id>`)."""
        return f"{self._namespace}-d{deployment_id}"

    def _ensure_network(self, api: Any, spec: ReplicaSpec) -> str:
        """Create the deployment's network unless it exists (then check it is this deployment's); its name.

        Raises:
            ReplicaStartFailed: the engine refused it, or a network of that name belongs to someone else.
        """
        name = self.network_name(spec.deployment_id)
        labels = {LABEL_MANAGED: self._namespace, LABEL_DEPLOYMENT: spec.deployment_id, LABEL_AGENT: spec.agent_id}
        with self._network_lock:  # replicas start in parallel: one create, the others find it
            try:
                api.create_network(name, driver="bridge", labels=labels, check_duplicate=True)
                return name
            except APIError as exc:
                if exc.status_code != HTTPStatus.CONFLICT:
                    raise ReplicaStartFailed(f"The engine refused the network {name}: {explanation(exc)}") from exc
            try:
                existing = api.inspect_network(name)
            except NotFound as exc:
                raise ReplicaStartFailed(f"The network {name} conflicts but vanished; retry.") from exc
        found = existing.get("Labels") or {}
        if found.get(LABEL_MANAGED) != self._namespace or found.get(LABEL_DEPLOYMENT) != spec.deployment_id:
            raise ReplicaStartFailed(f"A network named {name} exists and is not this deployment's.")
        return name

    def list_networks(self) -> set[str]:
        with self._engine() as api:
            rows = api.networks(filters={"label": f"{LABEL_MANAGED}={self._namespace}"})
        labelled = ((row.get("Labels") or {}).get(LABEL_DEPLOYMENT) for row in rows)
        return {str(deployment_id) for deployment_id in labelled if deployment_id}

    def remove_network(self, deployment_id: str) -> bool:
        """Remove the deployment's networks (found by their labels, whatever their name); False if none.

        Raises:
            RunnerError: the engine refused (e.g. a container is still attached to one).
        """
        labels = [f"{LABEL_MANAGED}={self._namespace}", f"{LABEL_DEPLOYMENT}={deployment_id}"]
        with self._engine() as api:
            rows = api.networks(filters={"label": labels})
            removed = False
            for row in rows:
                try:
                    api.remove_network(row["Id"])
                except NotFound:
                    continue
                except APIError as exc:
                    name = row.get("Name") or row["Id"]
                    raise RunnerError(f"The engine could not remove the network {name}: {explanation(exc)}") from exc
                removed = True
        return removed

    # -- images -------------------------------------------------------------------------------

    def local_image(self, ref: str) -> ImageInfo | None:
        with self._engine() as api:
            try:
                local = self._inspect_image(api, ref)
            except ImageUnavailable:
                return None
        return None if local is None else ImageInfo(ref=ref, id=str(local["Id"]), source="local")

    def ensure_image(self, ref: str, *, auth: RegistryCredentials | None = None) -> ImageInfo:
        with self._engine() as api:
            local = self._inspect_image(api, ref)
            if local is not None:
                return ImageInfo(ref=ref, id=str(local["Id"]), source="local")
            pull_image(api, ref, timeout=self._pull_timeout, settings=self.settings, auth=auth)
            pulled = self._inspect_image(api, ref)
        if pulled is None:
            raise ImageUnavailable(f"Image {ref!r} is not available after pulling it.")
        return ImageInfo(ref=ref, id=str(pulled["Id"]), source="pulled")

    def tag_image(self, image_id: str, ref: str) -> None:
        repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        with self._engine() as api:
            try:
                api.tag(image_id, repository, tag)
            except NotFound as exc:
                raise ImageUnavailable(f"Image {image_id} is gone from the engine.") from exc
            except APIError as exc:
                raise ImageUnavailable(f"The engine refused to tag {image_id} as {ref!r}: {explanation(exc)}") from exc

    def remove_image(self, ref: str) -> bool:
        with self._engine() as api:
            try:
                api.remove_image(ref, force=False)
            except NotFound:
                return False
            except APIError as exc:
                if exc.status_code == HTTPStatus.CONFLICT:  # a container (running or not) still uses it
                    return False
                raise ImageUnavailable(f"The engine refused to remove {ref!r}: {explanation(exc)}") from exc
        return True

    @staticmethod
    def _inspect_image(api: Any, ref: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = api.inspect_image(ref)
        except NotFound:
            return None
        except APIError as exc:
            raise ImageUnavailable(f"Image {ref!r} cannot be used: {explanation(exc)}") from exc
        return data

    def build_image(
        self, spec: BuildSpec, *, on_output: Callable[[str], None], cancel: Cancellation | None = None
    ) -> ImageInfo:
        try:
            check_image_reference(spec.tag)
        except InvalidReference as exc:
            raise BuildFailed(f"Refusing to build: {spec.tag!r} is not a valid image tag.") from exc
        with self._engine() as api:
            commit = build_from_source(
                api,
                spec,
                clone_timeout=min(spec.clone_timeout, self._clone_timeout),
                build_timeout=min(spec.build_timeout, self._build_timeout),
                on_output=on_output,
                settings=self.settings,
                cancel=cancel,
            )
            built = self._inspect_image(api, spec.tag)
        if built is None:
            raise BuildFailed(f"The build finished but image {spec.tag!r} does not exist.")
        return ImageInfo(ref=spec.tag, id=str(built["Id"]), source="built", commit=commit)

    def branch_head(self, spec: BuildSpec) -> str:
        return git.branch_head(
            spec.git_url,
            spec.branch,
            timeout=min(spec.clone_timeout, self._clone_timeout),
            allow_local=spec.allow_local,
            allowed_hosts=self.settings.allowed_git_hosts,
        )

    # -- replicas -------------------------------------------------------------------------------

    def start_replica(self, spec: ReplicaSpec) -> ReplicaInfo:
        if spec.network_mode not in {"host", "bridge"}:
            raise ReplicaStartFailed(f"Unknown network mode {spec.network_mode!r}.")
        if spec.network_mode == "host" and not self.settings.host_network_allowed:
            raise RunnerConfigError(HOST_NETWORK_REFUSED)
        with self._engine() as api:
            image = self._inspect_image(api, spec.image)
            if image is None:
                raise ImageUnavailable(f"Image {spec.image!r} is not available on the engine.")
            user = self._user(image, spec.run_as_user)
            network = self._ensure_network(api, spec) if spec.network_mode == "bridge" else "host"
            try:
                created = api.create_container(**self._create_arguments(api, spec, user, network))
                return self._start(api, str(created["Id"]), created=True)
            except ImageNotFound as exc:
                raise ImageUnavailable(f"Image {spec.image!r} is gone: {explanation(exc)}") from exc
            except APIError as exc:
                if exc.status_code != 409:
                    raise ReplicaStartFailed(f"The engine refused the container: {explanation(exc)}") from exc
            return self._start(api, self._adoptable(api, spec))

    def _user(self, image: dict[str, Any], run_as_user: str | None) -> str:
        """Who a container of `image` runs as (never uid 0: `users.effective_user`)."""
        configured = (image.get("Config") or {}).get("User")
        return effective_user(configured, run_as_user=run_as_user, default=self.settings.default_user)

    def _create_arguments(self, api: Any, spec: ReplicaSpec, user: str, network: str) -> dict[str, Any]:
        """The container's create call: hardened, on `network` only (`host`, or the deployment's own)."""
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
            network_mode=network,
            port_bindings={f"{spec.port}/tcp": (self.settings.publish_host, None)} if bridge else None,
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
                raise ReplicaStartFailed(f"The engine could not start the container: {explanation(exc)}") from exc
            data = api.inspect_container(container_id)
        info = info_from_inspect(data, host=self.settings.replica_host)
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

    def stop_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:
        """Stop the container (a stopped or missing one is fine).

        Raises:
            RunnerError: the engine refused to stop it.
        """
        with self._engine() as api:
            try:
                api.stop(container, timeout=max(math.ceil(stop_timeout), 0))
            except NotFound:
                return
            except APIError as exc:
                raise RunnerError(f"The engine could not stop {container}: {explanation(exc)}") from exc

    def remove_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:
        with self._engine() as api:
            try:
                api.stop(container, timeout=max(math.ceil(stop_timeout), 0))
            except NotFound:
                return
            except APIError as exc:
                log.info("stopping %s failed (%s); removing it by force", container, explanation(exc))
            try:
                api.remove_container(container, force=True)
            except NotFound:
                return
            except APIError as exc:
                if exc.status_code == 409 and "in progress" in explanation(exc):
                    self._wait_until_gone(api, container, timeout=stop_timeout + REMOVAL_WAIT_SECONDS)
                    return
                raise RunnerError(f"The engine could not remove {container}: {explanation(exc)}") from exc

    @staticmethod
    def _wait_until_gone(api: Any, container: str, *, timeout: float) -> None:
        """Another caller is removing the container: return once it is gone, so callers may rely on that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                api.inspect_container(container)
            except NotFound:
                return
            time.sleep(0.05)
        raise RunnerError(f"The engine is still removing {container} after {timeout:g}s.")

    def list_replicas(self) -> list[ReplicaInfo]:
        with self._engine() as api:
            rows = api.containers(all=True, filters={"label": f"{LABEL_MANAGED}={self._namespace}"})
        host = self.settings.replica_host
        return [info for row in rows if (info := info_from_list(row, host=host)) is not None]

    def watch_exits(self, on_exit: Callable[[], None], stop: threading.Event, *, retry: float) -> None:
        """The engine's `die` events of this namespace's containers, each a call of `on_exit`.

        The event stream is read with a read timeout of `EXIT_WATCH_READ_SECONDS`: a quiet stream ends and is
        opened again at once, so `stop` is seen within that time over any transport (an SSH stream cannot
        be cancelled from another thread). Each stream after the first asks the engine for its events since
        the previous one opened (the engine's own clock, from its `Date` header), so an exit between two
        streams is announced too; an event the previous stream announced already (by its `timeNano`) is not
        announced twice.
        """
        filters = json.dumps({"type": ["container"], "event": ["die"], "label": [f"{LABEL_MANAGED}={self._namespace}"]})
        since: int | None = None
        newest = 0
        while not stop.is_set():
            params: dict[str, Any] = {"filters": filters}
            if since is not None:
                params["since"] = str(since)
            try:
                with self._engine() as api:
                    response = open_stream(api, "/events", "", params=params)
            except Exception:  # noqa: BLE001 - the engine is away or refused: the passes report it; tried again
                stop.wait(retry)
                continue
            opened = engine_date(response)
            set_read_timeout(response, EXIT_WATCH_READ_SECONDS)
            try:
                for line in response.iter_lines():
                    if stop.is_set():
                        break
                    if not line:
                        continue
                    event = json.loads(line)
                    stamp = int(event.get("timeNano") or 0)
                    if stamp and stamp <= newest:
                        continue  # replayed from before this stream: announced already
                    newest = max(newest, stamp)
                    self._settled(event)
                    on_exit()
            except Exception as exc:  # noqa: BLE001 - a quiet stream timed out, or the engine went away: opened again
                log.debug("the engine's event stream ended (%s): opening it again", type(exc).__name__)
            finally:
                response.close()
            if opened is not None:
                since = opened - 1  # the header has whole seconds: one more covers the one it was cut from

    def _settled(self, event: dict[str, Any]) -> None:
        """Wait until the engine has recorded a container's end (its `die` event) everywhere a pass reads.

        The engine sends `die` before its container list shows the container exited (it updates that view
        last, still holding the container's lock); an inspect takes the lock, so once it answers, a pass's
        list sees the exit.
        """
        container = event.get("id")
        if not container:
            return
        try:
            with self._engine() as api:
                api.inspect_container(container)
        except Exception:  # noqa: BLE001 - removed meanwhile, or the engine went away: the pass sees what is
            pass

    def exit_info(self, container: str) -> ExitInfo:
        with self._engine() as api:
            try:
                state = api.inspect_container(container).get("State") or {}
            except NotFound as exc:
                raise RunnerError(f"No such container: {container}") from exc
        return exit_info_from_state(state)

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
            ContainerGone: no such container.
        """
        return self._stream_logs(
            "/containers/{0}/logs",
            container,
            replica=replica,
            tail=tail,
            since=since,
            follow=follow,
            refused=f"The engine refused the logs of {container}",
            missing=f"No such container: {container}",
        )

    def _stream_logs(
        self,
        path: str,
        ident: str,
        *,
        replica: int,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        refused: str,
        missing: str | None = None,
    ) -> Iterator[LogLine]:
        """Open the engine's log stream at `path` (a container's or, through a Swarm manager, a task's).

        Raises:
            ContainerGone: `missing` when the engine answers 404 (if given); the engine's reason when it
                answers 409 (the container is dead or being removed: it has no logs to give any more).
            RunnerError: `refused` with the engine's reason.
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
            try:
                response = open_stream(api, path, ident, params=params)
            except NotFound as exc:
                if missing is None:
                    raise RunnerError(f"{refused}: {explanation(exc)}") from exc
                raise ContainerGone(missing) from exc
            except APIError as exc:
                if exc.status_code == HTTPStatus.CONFLICT:  # "dead or marked for removal": going, as good as gone
                    raise ContainerGone(f"{refused}: {explanation(exc)}") from exc
                raise RunnerError(f"{refused}: {explanation(exc)}") from exc
        if follow:
            set_read_timeout(response, None)
        return log_lines(response, replica=replica, guard=self._engine, max_bytes=self.settings.log_line_max_bytes)

    def stats(self, container: str) -> Stats:
        with self._engine() as api:
            try:
                data = api.stats(container, stream=False, one_shot=True)
            except NotFound as exc:
                raise RunnerError(f"No such container: {container}") from exc
        return stats_from_sample(data)
