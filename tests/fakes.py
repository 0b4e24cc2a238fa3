"""An in-memory runner for fast unit tests of the reconciler's logic and of the API's rules.

Every runner behaviour these tests rely on is also shown against the real engine in tests/integration.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from deploy_service.errors import EngineUnavailable
from deploy_service.models.types import utcnow
from deploy_service.runner.base import (
    BuildFailed,
    BuildSpec,
    Cancellation,
    ContainerGone,
    ExitInfo,
    ImageInfo,
    ImageUnavailable,
    LogLine,
    RegistryCredentials,
    ReplicaInfo,
    ReplicaSpec,
    Runner,
    Stats,
)


@dataclass
class FakeContainer:
    info: ReplicaInfo
    spec: ReplicaSpec
    oom_killed: bool = False
    logs: list[LogLine] = field(default_factory=list)


class FakeRunner(Runner):
    name = "fake"

    def __init__(self, *, images: set[str] | None = None, network: str = "host") -> None:
        self.images = set(images or {"deploy-test/http-agent:latest"})
        self.network = network
        self.containers: dict[str, FakeContainer] = {}
        self.down = False
        self.build_lines = ["Step 1/2 : FROM scratch", "Step 2/2 : COPY . /", "Successfully built abc"]
        self.fail_build: str | None = None
        self.build_commit = "0f" * 20
        self.branch_heads: list[BuildSpec] = []
        """Every `branch_head` asked; the answer is `build_commit` (what a build of the branch checks out)."""
        self.fail_branch_head: str | None = None
        """The commit each build says it checked out."""
        self.calls: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.on_start: Callable[[ReplicaSpec], None] | None = None
        self.on_stop: str | None = None
        """A line each container prints when it is stopped (its last words)."""
        self.logs_fail_after: int | None = None
        """`logs` raises an outage after this many lines (a read that breaks part way)."""
        self.stats_calls: dict[str, int] = {}
        self.pullable: dict[str, RegistryCredentials | None] = {}
        """Images a pull can fetch, each with the credentials its registry wants (None: anyone may pull)."""
        self.pulls: list[tuple[str, RegistryCredentials | None]] = []
        self.builds: list[BuildSpec] = []
        self.removed_images: list[str] = []
        """Tags `remove_image` removed, in order."""
        self.image_ids: dict[str, str] = {}
        """The id each image reference names now (a stable fake id by default; `move_tag` moves one)."""

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise EngineUnavailable("fake engine is down")

    def ping(self) -> None:
        self._check("ping")

    def engine_version(self) -> str | None:
        self._check("engine_version")
        return "fake-1.0"

    def network_mode(self) -> str:
        return self.network

    def image_id(self, ref: str) -> str:
        """The engine's id of the image `ref` names now (an id names itself)."""
        if ref.startswith("sha256:"):
            return ref
        return self.image_ids.setdefault(ref, "sha256:" + hashlib.sha256(ref.encode()).hexdigest())

    def move_tag(self, ref: str, image_id: str) -> None:
        """Point the tag `ref` at another image (the image it named before stays, by its id)."""
        self.images.add(self.image_id(ref))
        self.images.add(ref)
        self.image_ids[ref] = image_id

    def _present(self, image: str) -> bool:
        return image in self.images or image in {self.image_id(ref) for ref in self.images}

    def ensure_image(self, ref: str, *, auth: RegistryCredentials | None = None) -> ImageInfo:
        self._check("ensure_image")
        if self._present(ref):
            return ImageInfo(ref=ref, id=self.image_id(ref), source="local")
        if ref not in self.pullable:
            raise ImageUnavailable(f"Image {ref} is not available locally and could not be pulled.")
        self.pulls.append((ref, auth))
        wanted = self.pullable[ref]
        if wanted is not None and auth != wanted:
            raise ImageUnavailable(
                f"Image {ref!r} is not local and pulling it failed: unauthorized: authentication required"
            )
        self.images.add(ref)
        return ImageInfo(ref=ref, id=self.image_id(ref), source="pulled")

    def local_image(self, ref: str) -> ImageInfo | None:
        self._check("local_image")
        return ImageInfo(ref=ref, id=self.image_id(ref), source="local") if self._present(ref) else None

    def tag_image(self, image_id: str, ref: str) -> None:
        self._check("tag_image")
        if image_id not in self.images and image_id not in {self.image_id(r) for r in self.images}:
            raise ImageUnavailable(f"Image {image_id} is gone from the engine.")
        self.images.add(ref)
        self.image_ids[ref] = image_id

    def remove_image(self, ref: str) -> bool:
        """Untag `ref`; its image goes with its last tag unless a container runs it (as the engine's)."""
        self._check("remove_image")
        if ref not in self.images:
            return False
        image_id = self.image_id(ref)
        if any(c.spec.image in (ref, image_id) for c in self.containers.values()):
            return False
        self.images.discard(ref)
        self.removed_images.append(ref)
        if not any(self.image_id(other) == image_id for other in self.images if not other.startswith("sha256:")):
            self.images.discard(image_id)
        return True

    def build_image(
        self, spec: BuildSpec, *, on_output: Callable[[str], None], cancel: Cancellation | None = None
    ) -> ImageInfo:
        self._check("build_image")
        self.builds.append(spec)
        for line in self.build_lines:
            on_output(line)
        if self.fail_build:
            raise BuildFailed(self.fail_build, log="\n".join(self.build_lines))
        if spec.tag in self.images:
            self.images.add(self.image_id(spec.tag))
        self.images.add(spec.tag)
        self.image_ids[spec.tag] = "sha256:" + hashlib.sha256(f"{spec.tag}#{len(self.builds)}".encode()).hexdigest()
        return ImageInfo(
            ref=spec.tag, id=self.image_ids[spec.tag], source="built", commit=spec.commit or self.build_commit
        )

    def branch_head(self, spec: BuildSpec) -> str:
        self._check("branch_head")
        self.branch_heads.append(spec)
        if self.fail_branch_head:
            raise BuildFailed(self.fail_branch_head)
        return self.build_commit

    def start_replica(self, spec: ReplicaSpec) -> ReplicaInfo:
        self._check("start_replica")
        if not self._present(spec.image):
            raise ImageUnavailable(f"Image {spec.image} is gone.")
        with self._lock:
            for container in self.containers.values():
                if container.info.name == spec.name:
                    container.info = replace(container.info, state="running", exit_code=None)
                    return container.info
            container_id = f"c{next(self._ids):06d}"
            info = ReplicaInfo(
                container_id=container_id,
                name=spec.name,
                deployment_id=spec.deployment_id,
                agent_id=spec.agent_id,
                index=spec.index,
                generation=spec.generation,
                state="running",
                port=spec.port,
                created_at=utcnow(),
            )
            self.containers[container_id] = FakeContainer(info=info, spec=spec)
        if self.on_start:
            self.on_start(spec)
        return info

    def stop_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:
        """Like the engine's: the container exits (with the code of a SIGTERM) and says `on_stop` if set."""
        self._check("stop_replica")
        with self._lock:
            found = self.containers.get(container)
            if found is None or not found.info.running:
                return
            found.info = replace(found.info, state="exited", exit_code=143)
        if self.on_stop:
            self.say(container, self.on_stop)

    def remove_replica(self, container: str, *, stop_timeout: float = 10.0) -> None:
        self._check("remove_replica")
        with self._lock:
            self.containers.pop(container, None)

    def list_replicas(self) -> list[ReplicaInfo]:
        self._check("list_replicas")
        with self._lock:
            return [container.info for container in self.containers.values()]

    def exit_info(self, container: str) -> ExitInfo:
        self._check("exit_info")
        found = self.containers[container]
        return ExitInfo(exit_code=found.info.exit_code, oom_killed=found.oom_killed)

    def logs(
        self,
        container: str,
        *,
        replica: int,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """Like the engine's: a missing container raises at once (`ContainerGone`), lines come after."""
        self._check("logs")
        found = self.containers.get(container)
        if found is None:
            raise ContainerGone(f"No such container: {container}")
        lines = [line for line in found.logs if since is None or (line.timestamp and line.timestamp > since)]
        lines = (lines[-tail:] if tail else []) if tail is not None else lines
        return self._stream(lines)

    def _stream(self, lines: list[LogLine]) -> Iterator[LogLine]:
        """The lines, breaking off after `logs_fail_after` of them when that is set (a stream that dies)."""
        for number, line in enumerate(lines):
            if self.logs_fail_after is not None and number >= self.logs_fail_after:
                raise EngineUnavailable("fake engine broke off the log stream")
            yield line

    def stats(self, container: str) -> Stats:
        """Each call: +0.25 s of CPU per 1 s of system time on 2 CPUs (50% of a core); (index + 1) MiB."""
        self._check("stats")
        found = self.containers[container]
        self.stats_calls[container] = calls = self.stats_calls.get(container, 0) + 1
        return Stats(
            memory_bytes=(found.info.index + 1) * 1024 * 1024,
            memory_limit_bytes=found.spec.memory_mb * 1024 * 1024,
            cpu_total_ns=calls * 250_000_000,
            system_cpu_ns=calls * 1_000_000_000,
            online_cpus=2,
            sampled_at=utcnow(),
        )

    # -- test controls ---------------------------------------------------------------------------

    def crash(self, container_id: str, *, exit_code: int = 1, oom: bool = False) -> None:
        with self._lock:
            found = self.containers[container_id]
            found.info = replace(found.info, state="exited", exit_code=exit_code)
            found.oom_killed = oom

    def crash_all(self, deployment_id: str, **kwargs: object) -> None:
        for container in list(self.containers.values()):
            if container.info.deployment_id == deployment_id and container.info.running:
                self.crash(container.info.container_id, **kwargs)  # type: ignore[arg-type]

    def of(self, deployment_id: str) -> list[ReplicaInfo]:
        return sorted(
            (c.info for c in self.containers.values() if c.info.deployment_id == deployment_id),
            key=lambda info: (info.index, info.generation),
        )

    def say(self, container_id: str, line: str, *, stream: str = "stdout") -> None:
        found = self.containers[container_id]
        found.logs.append(LogLine(timestamp=utcnow(), replica=found.info.index, stream=stream, line=line))
