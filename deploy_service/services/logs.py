"""Deployment logs: the stored build log, and runtime output read from the engine (also followed live).

The build log is stored on the deployment, capped at `BUILD_LOG_MAX_BYTES` (the oldest lines go
first), one line per output line prefixed with its UTC timestamp. Runtime logs are read from the
engine's log driver (json-file with rotation caps) when asked for, merged with the stored last lines of
the containers the reconciler removed (`stored_logs`; a container whose lines are stored is not asked
for), so the lines outlive the containers. No line is
longer than `LOG_LINE_MAX_BYTES`: the runner reads longer ones in pieces, and the stored build log
splits what it is given the same way (`runner.lines`).

A replica whose container is gone (removed behind the service's back, or before the reconciler saw
it) has no runtime lines left to read: it adds none, and the other replicas' lines are still answered.

Following (`follow_logs`) starts with the same merged lines as a read (stored ones included), takes
one of the user's `LOG_FOLLOW_MAX_PER_USER` slots (`follow_slots`) and holds no database connection
while it waits or writes to the client: each poll reads what it needs of the deployment as plain
values, then hands the connection back before asking the engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deploy_service import rawdb
from deploy_service.errors import EngineUnavailable, as_service_error
from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentStatus, Principal
from deploy_service.models.types import utcnow
from deploy_service.runner.base import ContainerGone, LogLine
from deploy_service.runner.lines import split_text
from deploy_service.services import follow_slots, stored_logs
from deploy_service.services.deployments import get_deployment
from deploy_service.services.engine import runner
from deploy_service.settings import current_settings

ENDED = frozenset(
    {DeploymentStatus.STOPPED, DeploymentStatus.FAILED, DeploymentStatus.SUCCEEDED, DeploymentStatus.KILLED}
)
KEEPALIVE_SECONDS = 15.0


def append_build_log(deployment: Deployment, lines: Iterable[str], *, max_bytes: int, line_max_bytes: int) -> None:
    """Append timestamped lines to the stored build log, dropping the oldest past `max_bytes`.

    A line over `line_max_bytes` is stored as several, each at most that long (cut on a character).
    """
    stamp = utcnow().isoformat()
    added = "".join(f"{stamp} {piece}\n" for line in lines for piece in split_text(line.rstrip(), line_max_bytes))
    text = (deployment.build_log or "") + added
    if len(text.encode()) > max_bytes:
        encoded = text.encode()[-max_bytes:]
        text = encoded.decode(errors="ignore")
        text = text[text.find("\n") + 1 :]
    deployment.build_log = text


def build_log_lines(deployment: Deployment) -> list[dict[str, Any]]:
    """The stored build log as contract log lines."""
    lines = []
    for raw in (deployment.build_log or "").splitlines():
        stamp, _, line = raw.partition(" ")
        try:
            timestamp: datetime | None = datetime.fromisoformat(stamp)
        except ValueError:
            timestamp, line = None, raw
        lines.append({"timestamp": timestamp, "replica": None, "stream": "build", "line": line})
    return lines


def _as_dict(line: LogLine) -> dict[str, Any]:
    return {"timestamp": line.timestamp, "replica": line.replica, "stream": line.stream, "line": line.line}


def _containers(deployment: Deployment, replica: int | None) -> list[tuple[int, str]]:
    return [
        (instance.index, instance.container_id)
        for instance in deployment.instances
        if instance.container_id and (replica is None or instance.index == replica)
    ]


def _container_lines(
    container: str, *, replica: int, tail: int | None = None, since: datetime | None = None
) -> Iterator[LogLine]:
    """The container's lines from the engine; none when its container is gone."""
    try:
        yield from runner().logs(container, replica=replica, tail=tail, since=since)
    except ContainerGone:
        return


def _runtime_lines(
    containers: list[tuple[int, str]], *, tail: int | None, since: datetime | None
) -> list[dict[str, Any]]:
    lines: list[LogLine] = []
    for index, container in containers:
        lines.extend(_container_lines(container, replica=index, tail=tail, since=since))
    lines.sort(key=lambda line: line.timestamp or datetime.min.replace(tzinfo=UTC))
    if tail is not None:
        lines = lines[-tail:] if tail else []
    return [_as_dict(line) for line in lines]


def _build_lines(lines: list[dict[str, Any]], *, tail: int, since: datetime | None) -> list[dict[str, Any]]:
    kept = [line for line in lines if since is None or (line["timestamp"] and line["timestamp"] > since)]
    return kept[-tail:] if tail else []


def read_logs(
    actor: Principal,
    deployment_id: str,
    *,
    tail: int = 100,
    since: datetime | None = None,
    replica: int | None = None,
    source: str = "runtime",
) -> dict[str, Any]:
    """`{deployment_id, lines}`: the build log, or the replicas' output merged by time."""
    deployment = get_deployment(actor, deployment_id)
    if source == "build":
        return {
            "deployment_id": deployment.id,
            "lines": _build_lines(build_log_lines(deployment), tail=tail, since=since),
        }
    kept = stored_logs.stored(deployment, tail=tail, since=since, replica=replica)
    live = [(index, c) for index, c in _containers(deployment, replica) if c not in kept.containers]
    return {"deployment_id": deployment.id, "lines": _merged(kept.lines, live, tail=tail, since=since)}


def _merged(
    kept: list[dict[str, Any]], live: list[tuple[int, str]], *, tail: int, since: datetime | None
) -> list[dict[str, Any]]:
    """The stored lines of removed containers and the live containers' lines, by time, the last `tail`."""
    lines = sorted(
        [*kept, *_runtime_lines(live, tail=tail, since=since)],
        key=lambda line: line["timestamp"] or datetime.min.replace(tzinfo=UTC),
    )
    return lines[-tail:] if tail else []


def _sse(data: Any, event: str | None = None) -> str:
    payload = json.dumps(data, default=lambda value: value.isoformat() if isinstance(value, datetime) else str(value))
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


@dataclass(frozen=True)
class _Look:
    """What one poll reads of the deployment, as plain values (nothing left to load lazily)."""

    status: str
    finished: bool
    containers: list[tuple[int, str]]
    build_lines: list[dict[str, Any]]
    stored_lines: list[dict[str, Any]]


def _look(
    actor: Principal,
    deployment_id: str,
    *,
    source: str,
    replica: int | None,
    stored: tuple[int, datetime | None] | None = None,
) -> _Look:
    """Read the deployment, then give the connection back to the pool (before the engine is asked).

    With `stored=(tail, since)` (the first look of a stream) it also reads the stored lines of removed
    containers, and leaves those containers out of `containers`.
    """
    try:
        deployment = get_deployment(actor, deployment_id)
        build = source == "build"
        containers = [] if build else _containers(deployment, replica)
        stored_lines: list[dict[str, Any]] = []
        if stored is not None and not build:
            kept = stored_logs.stored(deployment, tail=stored[0], since=stored[1], replica=replica)
            stored_lines = kept.lines
            containers = [(index, c) for index, c in containers if c not in kept.containers]
        return _Look(
            status=deployment.status,
            finished=deployment.status in ENDED or (build and deployment.image_ready),
            containers=containers,
            build_lines=build_log_lines(deployment) if build else [],
            stored_lines=stored_lines,
        )
    finally:
        db.session.rollback()  # ends the session's transaction: its connection goes back to the pool
        rawdb.release()  # and the login check's


def follow_logs(
    actor: Principal,
    deployment_id: str,
    *,
    tail: int = 100,
    since: datetime | None = None,
    replica: int | None = None,
    source: str = "runtime",
) -> Generator[str, None, None]:
    """Server-sent events: the last lines, then new ones as they come, until the deployment ends.

    Runs inside the request's app context (the view wraps it with `stream_with_context`); the first
    `next()` (in the view) answers 404 or 429 before the stream starts. Ends with an `end` event
    carrying the final status, or after `LOG_FOLLOW_MAX_SECONDS`; its slot is given back however it ends.

    Raises:
        NotFound: no such deployment (or someone else's).
        RateLimited: the user already follows `LOG_FOLLOW_MAX_PER_USER` streams.
    """
    settings = current_settings().logs
    poll, deadline = settings.follow_poll, time.monotonic() + settings.follow_max
    deployment = get_deployment(actor, deployment_id)
    started = utcnow()
    slot = follow_slots.open_slot(
        actor,
        deployment.id,
        limit=settings.follow_max_per_user,
        lease=settings.follow_lease,
        longest=settings.follow_max,
    )
    try:
        rawdb.release()  # the login check's connection goes back to the pool for the stream's lifetime
        yield ": following\n\n"
        yield from _follow(
            actor,
            deployment_id,
            slot=slot,
            poll=poll,
            deadline=deadline,
            started=started,
            tail=tail,
            since=since,
            replica=replica,
            source=source,
        )
    except EngineUnavailable as exc:
        error = as_service_error(exc)
        yield _sse({"error": error.kind, "message": error.message}, event="error")
    finally:
        slot.release()


def _follow(
    actor: Principal,
    deployment_id: str,
    *,
    slot: follow_slots.Slot,
    poll: float,
    deadline: float,
    started: datetime,
    tail: int,
    since: datetime | None,
    replica: int | None,
    source: str,
) -> Iterator[str]:
    look = _look(actor, deployment_id, source=source, replica=replica, stored=(tail, since))
    if source == "build":
        first = _build_lines(look.build_lines, tail=tail, since=since)
    else:
        first = _merged(look.stored_lines, look.containers, tail=tail, since=since)
    for sent in first:
        yield _sse(sent)
    sent_build = len(look.build_lines)
    seen: dict[int, datetime] = {}
    for sent in first:
        if sent["replica"] is not None and sent["timestamp"]:
            seen[sent["replica"]] = max(seen.get(sent["replica"], sent["timestamp"]), sent["timestamp"])
    last_beat = time.monotonic()
    while True:
        if look.finished:
            yield _sse({"status": look.status}, event="end")
            return
        if time.monotonic() - last_beat > KEEPALIVE_SECONDS:
            last_beat = time.monotonic()
            yield ": keep-alive\n\n"
        time.sleep(poll)
        if time.monotonic() >= deadline:
            break
        slot.renew()
        look = _look(actor, deployment_id, source=source, replica=replica)
        for build_line in look.build_lines[sent_build:]:
            yield _sse(build_line)
        sent_build = max(sent_build, len(look.build_lines))
        for index, container in look.containers:
            after = seen.get(index, since or started)
            for line in _container_lines(container, replica=index, since=after):
                if line.timestamp is None or line.timestamp > after:
                    yield _sse(_as_dict(line))
                    if line.timestamp:
                        seen[index] = max(seen.get(index, line.timestamp), line.timestamp)
    yield _sse({"status": look.status, "reason": "follow time limit reached"}, event="end")
