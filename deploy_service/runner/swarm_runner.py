"""The Docker Swarm backend of the runner: `SwarmRunner`, a deployment as one replicated Swarm service.

Talks to a Swarm manager (`DOCKER_HOST`, or the local socket) through the same SDK as `DockerRunner`,
which it extends: images (inspect, pull, build), container logs, stats and exit details are the Docker
backend's, used on the containers of tasks that run on the engine it talks to (one node: all of them).
Logs of a task on another node come through the manager (`/tasks/<id>/logs`); stats and OOM details of
such a task are not available (the manager's API has none).

What changes is who keeps replicas alive: Swarm does (a `ServiceRunner`). A deployment is the service
`ds-<deployment id>` with N replicas, host networking, a restart policy (restart after the backoff base,
at most the restart budget within the stable window), and start-first rolling updates that roll back on
failure. The reconciler applies the spec (`apply_service`) when the database wants another replica
count or generation, and reads services with their tasks (`list_services`) to derive instances, events
and status. `swarm_records` holds the spec and the readers of the engine's documents.

Built images: with `SWARM_REGISTRY` set, an image built here is tagged `<registry>/<name>:<tag>`, pushed
there (credentials from `SWARM_REGISTRY_USERNAME` / `SWARM_REGISTRY_PASSWORD` if set) and deployed by that
reference, so every node can pull it. Unset, the local image is used, which only a single node has.
Services are created and updated by posting the spec document as it is (`send_service`): the SDK's
`create_service` / `update_service` would send the same body but take no registry credentials (they look
them up in the machine's Docker config, which `NoStoredAuth` keeps out). `X-Registry-Auth` carries the
agent's own login for its image's registry (`ServiceSpec.registry_auth`), or for a built image pushed to
`SWARM_REGISTRY` the configured `SWARM_REGISTRY_USERNAME` / `_PASSWORD`, so every node pulls with it
(`docker service create --with-registry-auth`); nothing else is ever sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

from docker.errors import APIError, NotFound

from deploy_service.references import image_registry
from deploy_service.runner.base import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    BuildSpec,
    Cancellation,
    ImageInfo,
    LogLine,
    RegistryCredentials,
    ReplicaInfo,
    ReplicaSpec,
    ServiceInfo,
    ServiceRunner,
    ServiceSpec,
    TaskInfo,
)
from deploy_service.runner.docker_client import registry_auth_header
from deploy_service.runner.docker_common import explanation
from deploy_service.runner.docker_runner import DockerRunner
from deploy_service.runner.errors import (
    BuildFailed,
    ContainerGone,
    EngineUnavailable,
    ImageUnavailable,
    ReplicaStartFailed,
    RunnerConfigError,
    RunnerError,
)
from deploy_service.runner.settings import RunnerSettings
from deploy_service.runner.swarm_records import (
    MAX_REPLICAS,
    service_document,
    service_info,
    service_name,
    task_info,
)

__all__ = ["SwarmRunner", "current_tasks", "registry_reference", "send_service", "task_replica"]

log = logging.getLogger(__name__)

REMOVAL_GRACE_SECONDS = 15.0
TASK_SETTLE_SECONDS = 5.0
"""How long an exit watcher waits for the manager to record that a task's container ended (`_settled`)."""
TASK_LABEL = "com.docker.swarm.task.id"


def send_service(
    api: Any, document: dict[str, Any], *, current: dict[str, Any] | None, auth: RegistryCredentials | None
) -> str:
    """Create the service `document` describes, or update `current` (its inspect) to it; the service's id.

    The body is `document` itself (as the SDK's own calls send it); `auth` goes as `X-Registry-Auth` when it is
    for the registry of the document's image, else no credentials go at all.

    Raises:
        docker.errors.APIError: the manager refused it.
    """
    image = str(document["TaskTemplate"]["ContainerSpec"]["Image"])
    headers = registry_auth_header(auth, registry=image_registry(image))
    if current is None:
        created = api._result(api._post_json(api._url("/services/create"), data=document, headers=headers), True)
        return str(created["ID"])
    service_id = str(current["ID"])
    response = api._post_json(
        api._url("/services/{0}/update", service_id),
        data=document,
        params={"version": current["Version"]["Index"]},
        headers=headers,
    )
    api._raise_for_status(response)
    return service_id


def registry_reference(registry: str, tag: str) -> str:
    """Where a locally built `tag` lives in `registry` (`registry.example.com/agents` + `name:r1`)."""
    name = tag.rsplit("/", 1)[-1]
    return f"{registry.rstrip('/')}/{name}"


class SwarmRunner(DockerRunner, ServiceRunner):
    """Runs each deployment as a replicated service of the Swarm whose manager `DOCKER_HOST` names."""

    name = "swarm"

    def __init__(self, settings: RunnerSettings | None = None) -> None:
        """Configure the backend (always host networking); no engine call is made.

        Raises:
            RunnerConfigError: a network mode other than host or auto; host networking not allowed.
        """
        settings = settings or RunnerSettings(backend="swarm")
        if settings.network_mode not in {"host", "auto"}:
            raise RunnerConfigError("the swarm runner uses host networking; DOCKER_NETWORK_MODE must be host or auto")
        if not settings.host_network_allowed:
            raise RunnerConfigError(
                "the swarm runner uses host networking, which is refused in production unless HOST_NETWORK_ALLOWED=true"
            )
        super().__init__(replace(settings, network_mode="host"))
        self._registry = settings.registry.strip()
        self._registry_auth: dict[str, str] | None = None
        if settings.registry_username:
            self._registry_auth = {"username": settings.registry_username, "password": settings.registry_password}
        self._replica_host = settings.replica_host or "127.0.0.1"
        self._nodes: dict[str, str] = {}

    # -- engine -------------------------------------------------------------------------------

    def _swarm_state(self, api: Any) -> dict[str, Any]:
        try:
            swarm: dict[str, Any] = api.info().get("Swarm") or {}
        except APIError as exc:
            raise EngineUnavailable(f"The container engine is not healthy: {explanation(exc)}") from exc
        return swarm

    def ping(self) -> None:
        """One `info` call: the engine answers and is an active Swarm manager.

        Raises:
            EngineUnavailable: it does not answer, or it is not a manager (nothing could be scheduled).
        """
        with self._engine() as api:
            swarm = self._swarm_state(api)
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise EngineUnavailable(
                f"The engine is not a Swarm manager (node state {swarm.get('LocalNodeState') or 'unknown'!s})."
            )

    def describe(self) -> dict[str, object]:
        with self._engine() as api:
            swarm = self._swarm_state(api)
        return {
            "swarm": {
                "node_state": swarm.get("LocalNodeState"),
                "manager": bool(swarm.get("ControlAvailable")),
                "nodes": swarm.get("Nodes"),
                "managers": swarm.get("Managers"),
                "registry": self._registry or None,
            }
        }

    def network_mode(self) -> str:
        return "host"

    # -- images -------------------------------------------------------------------------------

    def build_image(
        self, spec: BuildSpec, *, on_output: Callable[[str], None], cancel: Cancellation | None = None
    ) -> ImageInfo:
        built = super().build_image(spec, on_output=on_output, cancel=cancel)
        if not self._registry:
            return built
        if cancel is not None:
            cancel.check()
        target = registry_reference(self._registry, spec.tag)
        repository, tag = target.rsplit(":", 1) if ":" in target.rsplit("/", 1)[-1] else (target, "latest")
        with self._engine() as api:
            try:
                api.tag(spec.tag, repository, tag)
                on_output(f"Pushing {target}")
                for chunk in api.push(repository, tag=tag, stream=True, decode=True, auth_config=self._registry_auth):
                    if "error" in chunk:
                        raise BuildFailed(f"Pushing {target} failed: {chunk['error']}", log=json.dumps(chunk))
                    if chunk.get("status") and chunk.get("id") is None:
                        on_output(str(chunk["status"]))
            except APIError as exc:
                raise BuildFailed(f"Pushing {target} failed: {explanation(exc)}") from exc
        return ImageInfo(ref=spec.tag, id=built.id, source="built", commit=built.commit)

    def deploy_reference(self, image: str, *, built: bool) -> str:
        """The reference the nodes pull: the registry's copy of a built image when a registry is set."""
        return registry_reference(self._registry, image) if built and self._registry else image

    # -- replicas: Swarm runs them ----------------------------------------------------------------

    def start_replica(self, spec: ReplicaSpec) -> ReplicaInfo:
        raise ReplicaStartFailed("The swarm runner starts replicas through services (apply_service).")

    def stop_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:
        """Nothing: Swarm would start a new task for a container stopped alone (services are removed whole)."""

    def remove_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:
        """Remove the service the container belongs to (Swarm would replace a container removed alone)."""
        with self._engine() as api:
            try:
                labels = (api.inspect_container(container).get("Config") or {}).get("Labels") or {}
            except NotFound:
                return
        if labels.get(LABEL_MANAGED) == self._namespace and labels.get(LABEL_DEPLOYMENT):
            self.remove_service(labels[LABEL_DEPLOYMENT], stop_timeout=stop_timeout)

    def list_replicas(self) -> list[ReplicaInfo]:
        """The current task of each replica of every service (one that runs, or the newest one)."""
        return [
            task_replica(service, task) for service in self.list_services() for task in current_tasks(service).values()
        ]

    def _settled(self, event: dict[str, Any]) -> None:
        """Also wait (at most `TASK_SETTLE_SECONDS`) until the manager no longer says the container's task runs.

        A pass reads replicas from the tasks, whose state the node reports to the manager after the container's
        `die`: a pass woken before that would see the task running still, and wait for its next turn.
        """
        super()._settled(event)
        task_id = ((event.get("Actor") or {}).get("Attributes") or {}).get(TASK_LABEL)
        if not task_id:
            return
        deadline = time.monotonic() + TASK_SETTLE_SECONDS
        try:
            with self._engine() as api:
                while (api.inspect_task(task_id).get("Status") or {}).get("State") == "running":
                    if time.monotonic() >= deadline:
                        return
                    time.sleep(0.05)
        except Exception:  # noqa: BLE001 - removed meanwhile, or the engine went away: the pass sees what is
            pass

    # -- observation ---------------------------------------------------------------------------------

    def logs(
        self,
        container: str,
        *,
        replica: int,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """The container's lines from the engine it runs on; from the manager's task logs if it is elsewhere.

        Raises:
            ContainerGone: no such container, nor a task of ours that ran it.
        """
        try:
            return super().logs(container, replica=replica, tail=tail, since=since, follow=follow)
        except ContainerGone:
            task_id = self._task_of_container(container)
            if task_id is None:
                raise
        return self.task_logs(task_id, replica=replica, tail=tail, since=since, follow=follow)

    def _task_of_container(self, container: str) -> str | None:
        with self._engine() as api:
            services = api.services(filters={"label": f"{LABEL_MANAGED}={self._namespace}"})
            if not services:
                return None
            tasks = api.tasks(filters={"service": [service["ID"] for service in services]})
        for task in tasks:
            found = str(((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID") or "")
            if found and found.startswith(container):
                return str(task["ID"])
        return None

    def task_logs(
        self,
        task_id: str,
        *,
        replica: int,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """A task's lines through the Swarm manager (which fetches them from the task's node)."""
        return self._stream_logs(
            "/tasks/{0}/logs",
            task_id,
            replica=replica,
            tail=tail,
            since=since,
            follow=follow,
            refused=f"The Swarm manager refused the logs of task {task_id}",
            missing=f"No such task: {task_id}",
        )

    # -- services ----------------------------------------------------------------------------------

    def apply_service(self, spec: ServiceSpec) -> ServiceInfo:
        if not 1 <= spec.replicas <= MAX_REPLICAS:
            raise ReplicaStartFailed(f"The swarm runner runs 1 to {MAX_REPLICAS} replicas per deployment.")
        with self._engine() as api:
            image = self._inspect_image(api, spec.image)
            if image is None:
                raise ImageUnavailable(f"Image {spec.image!r} is not available on the engine.")
            document = service_document(
                spec,
                namespace=self._namespace,
                user=self._user(image, spec.run_as_user),
                image=self.deploy_reference(spec.image, built=spec.built),
                pids_limit=self._pids_limit,
                tmpfs_mb=self._tmpfs_mb,
                log_max_size=self._log_max_size,
                log_max_file=self._log_max_file,
            )
            name = service_name(spec.deployment_id)
            auth = self._push_auth(document) if spec.built else spec.registry_auth
            try:
                try:
                    current: dict[str, Any] | None = api.inspect_service(name)
                except NotFound:
                    current = None
                service_id = send_service(api, document, current=current, auth=auth)
                data = api.inspect_service(service_id)
            except APIError as exc:
                raise ReplicaStartFailed(f"The Swarm manager refused the service: {explanation(exc)}") from exc
        info = service_info(data, [])
        if info is None:
            raise ReplicaStartFailed(f"Service {name} lost its labels.")
        return info

    def _push_auth(self, document: dict[str, Any]) -> RegistryCredentials | None:
        """The configured `SWARM_REGISTRY` login, for the nodes that pull a built image from there."""
        if self._registry_auth is None or not self._registry:
            return None
        image = str(document["TaskTemplate"]["ContainerSpec"]["Image"])
        return RegistryCredentials(
            image_registry(image), self._registry_auth["username"], self._registry_auth["password"]
        )

    def remove_service(self, deployment_id: str, *, stop_timeout: float = 10.0) -> bool:
        name = service_name(deployment_id)
        with self._engine() as api:
            try:
                service = api.inspect_service(name)
            except NotFound:
                service = None
            if service is not None:
                labels = (service.get("Spec") or {}).get("Labels") or {}
                if labels.get(LABEL_MANAGED) != self._namespace:
                    raise RunnerError(f"Service {name} is not managed by this service's namespace.")
                try:
                    api.remove_service(service["ID"])
                except NotFound:
                    pass
                except APIError as exc:
                    raise RunnerError(f"The Swarm manager could not remove {name}: {explanation(exc)}") from exc
            self._wait_for_containers_gone(api, deployment_id, timeout=stop_timeout)
        return service is not None

    def _wait_for_containers_gone(self, api: Any, deployment_id: str, *, timeout: float) -> None:
        """Swarm stops a removed service's containers asynchronously: wait, so callers can rely on it.

        Containers still there after the stop timeout (plus a second) are removed by force, if local.
        """
        filters = {"label": [f"{LABEL_MANAGED}={self._namespace}", f"{LABEL_DEPLOYMENT}={deployment_id}"]}
        forced_at = time.monotonic() + timeout + 1.0
        deadline = forced_at + REMOVAL_GRACE_SECONDS
        while True:
            rows = api.containers(all=True, filters=filters)
            if not rows:
                return
            now = time.monotonic()
            if now >= deadline:
                raise RunnerError(f"{len(rows)} container(s) of {deployment_id} are still there.")
            if now >= forced_at:
                for row in rows:
                    try:
                        api.remove_container(row["Id"], force=True)
                    except APIError:
                        pass
            time.sleep(0.1)

    def list_services(self) -> list[ServiceInfo]:
        with self._engine() as api:
            services = api.services(filters={"label": f"{LABEL_MANAGED}={self._namespace}"})
            if not services:
                return []
            tasks = api.tasks(filters={"service": [service["ID"] for service in services]})
            if any(str(task.get("NodeID") or "") not in self._nodes for task in tasks if task.get("NodeID")):
                self._nodes = {
                    str(node["ID"]): str((node.get("Status") or {}).get("Addr") or "") for node in api.nodes()
                }
        by_service: dict[str, list[TaskInfo]] = {}
        for task in tasks:
            info = task_info(task, self._nodes, self._replica_host)
            if info is not None:
                by_service.setdefault(str(task.get("ServiceID")), []).append(info)
        found = [service_info(service, by_service.get(str(service["ID"]), [])) for service in services]
        return [info for info in found if info is not None]


def current_tasks(service: ServiceInfo) -> dict[int, TaskInfo]:
    """Per replica index, the task that stands for it now.

    The newest task the engine wants running (during a start-first update, the new generation's task,
    once it runs; the old one until then); without one, the newest task of the slot, so an exited
    replica that Swarm gave up on is still seen.
    """
    chosen: dict[int, TaskInfo] = {}
    for task in service.tasks:  # oldest first per index, so a tie goes to the newest
        if task.index >= service.replicas:
            continue
        best = chosen.get(task.index)
        if best is None or _rank(task) >= _rank(best):
            chosen[task.index] = task
    return chosen


def _rank(task: TaskInfo) -> tuple[bool, bool]:
    return task.desired_state in {"running", "ready"}, task.running


def task_replica(service: ServiceInfo, task: TaskInfo) -> ReplicaInfo:
    """A task as the replica it stands for (the value type the reconciler observes for both runners)."""
    return ReplicaInfo(
        container_id=task.container_id or task.task_id,
        name=f"{service_name(service.deployment_id)}.{task.index + 1}",
        deployment_id=service.deployment_id,
        agent_id=service.agent_id,
        index=task.index,
        generation=task.generation,
        state=task.state,
        exit_code=task.exit_code,
        host=task.host,
        port=task.port,
        created_at=task.created_at,
        task_id=task.task_id,
        task_state=task.task_state,
        error=task.error,
    )
