"""Deployment logs: the stored build log, and runtime output read from the engine (also followed live).

The build log is stored on the deployment, capped at `BUILD_LOG_MAX_BYTES` (the oldest lines go
first), one line per output line prefixed with its UTC timestamp. Runtime logs are read from the
engine's log driver (json-file with rotation caps) when asked for, merged with the stored last lines of
containers the reconciler removed (`stored_logs`); a container whose lines are stored is not asked for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from deploy_service import rawdb
from deploy_service.errors import EngineUnavailable, as_service_error
from deploy_service.extensions import db
from deploy_service.models import Deployment, DeploymentStatus, Principal
from deploy_service.models.types import utcnow
from deploy_service.runner.base import LogLine
from deploy_service.services import stored_logs
from deploy_service.services.deployments import get_deployment
from deploy_service.services.engine import runner
from deploy_service.settings import current_settings

ENDED = frozenset({DeploymentStatus.STOPPED, DeploymentStatus.FAILED, DeploymentStatus.KILLED})
KEEPALIVE_SECONDS = 15.0


def append_build_log(deployment: Deployment, lines: Iterable[str], *, max_bytes: int) -> None:
    """Append timestamped lines to the stored build log, dropping the oldest past `max_bytes`."""
    stamp = utcnow().isoformat()
    added = "".join(f"{stamp} {line.rstrip()}\n" for line in lines)
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


def _runtime_lines(
    containers: list[tuple[int, str]], *, tail: int | None, since: datetime | None
) -> list[dict[str, Any]]:
    engine = runner()
    lines: list[LogLine] = []
    for index, container in containers:
        lines.extend(engine.logs(container, replica=index, tail=tail, since=since))
    lines.sort(key=lambda line: line.timestamp or datetime.min.replace(tzinfo=UTC))
    if tail is not None:
        lines = lines[-tail:] if tail else []
    return [_as_dict(line) for line in lines]


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
        lines = [
            line
            for line in build_log_lines(deployment)
            if since is None or (line["timestamp"] and line["timestamp"] > since)
        ]
        return {"deployment_id": deployment.id, "lines": lines[-tail:] if tail else []}
    kept = stored_logs.stored(deployment, tail=tail, since=since, replica=replica)
    live = [(index, c) for index, c in _containers(deployment, replica) if c not in kept.containers]
    lines = sorted(
        [*kept.lines, *_runtime_lines(live, tail=tail, since=since)],
        key=lambda line: line["timestamp"] or datetime.min.replace(tzinfo=UTC),
    )
    return {"deployment_id": deployment.id, "lines": lines[-tail:] if tail else []}


def _sse(data: Any, event: str | None = None) -> str:
    payload = json.dumps(data, default=lambda value: value.isoformat() if isinstance(value, datetime) else str(value))
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def follow_logs(
    actor: Principal,
    deployment_id: str,
    *,
    tail: int = 100,
    since: datetime | None = None,
    replica: int | None = None,
    source: str = "runtime",
) -> Iterator[str]:
    """Server-sent events: the last lines, then new ones as they come, until the deployment ends.

    Runs inside the request's app context (the view wraps it with `stream_with_context`). Ends with an
    `end` event carrying the final status, or after `LOG_FOLLOW_MAX_SECONDS`.
    """
    settings = current_settings().logs
    poll, deadline = settings.follow_poll, time.monotonic() + settings.follow_max
    deployment = get_deployment(actor, deployment_id)
    started = utcnow()
    rawdb.release()  # the login check's connection goes back to the pool for the stream's lifetime
    yield ": following\n\n"
    try:
        yield from _follow(
            actor,
            deployment,
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


def _follow(
    actor: Principal,
    deployment: Deployment,
    *,
    poll: float,
    deadline: float,
    started: datetime,
    tail: int,
    since: datetime | None,
    replica: int | None,
    source: str,
) -> Iterator[str]:
    deployment_id = deployment.id
    first = read_logs(actor, deployment_id, tail=tail, since=since, replica=replica, source=source)["lines"]
    for line in first:
        yield _sse(line)
    sent_build = len(build_log_lines(deployment)) if source == "build" else 0
    seen: dict[int, datetime] = {}
    for line in first:
        if line["replica"] is not None and line["timestamp"]:
            seen[line["replica"]] = max(seen.get(line["replica"], line["timestamp"]), line["timestamp"])
    last_beat = time.monotonic()
    while time.monotonic() < deadline:
        db.session.expire_all()
        deployment = get_deployment(actor, deployment_id)
        if source == "build":
            lines = build_log_lines(deployment)
            for line in lines[sent_build:]:
                yield _sse(line)
            sent_build = len(lines)
            finished = deployment.image_ready or deployment.status in ENDED
        else:
            for index, container in _containers(deployment, replica):
                after = seen.get(index, since or started)
                for line in runner().logs(container, replica=index, since=after):
                    if line.timestamp is None or line.timestamp > after:
                        yield _sse(_as_dict(line))
                        if line.timestamp:
                            seen[index] = max(seen.get(index, line.timestamp), line.timestamp)
            finished = deployment.status in ENDED
        if finished:
            yield _sse({"status": deployment.status}, event="end")
            return
        if time.monotonic() - last_beat > KEEPALIVE_SECONDS:
            last_beat = time.monotonic()
            yield ": keep-alive\n\n"
        db.session.rollback()
        time.sleep(poll)
    yield _sse({"status": deployment.status, "reason": "follow time limit reached"}, event="end")
