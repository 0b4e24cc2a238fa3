"""Logs that outlive containers: the last lines of each removed container, stored and served.

The reconciler's driver reads a container's last `LOG_KEEP_LINES_PER_REPLICA` lines before it removes
it (restart after a crash, rolling update, scale down, stop, delete); the executor hands them to `keep`
(`models.ReplicaLog`, one row per container). `logs.read_logs` merges them with the live containers'
lines (`stored`), so a deployment's output is still there once its containers are gone, whatever its
status; `previous_logs` gives one replica's previous container alone (`previous=true`, like
`kubectl logs --previous`). Rows older than `LOG_RETENTION_DAYS` are deleted by the reconciler's
`PruneLogsJob` (`prune`). Reads go through `get_deployment`: stored lines are owner-scoped like the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select

from deploy_service.errors import NotFound
from deploy_service.extensions import db
from deploy_service.models import Deployment, Instance, InstanceStatus, Principal, ReplicaLog
from deploy_service.models.types import utcnow
from deploy_service.runner.base import LogLine
from deploy_service.services.deployments import get_deployment

OLDEST = datetime.min.replace(tzinfo=UTC)
GONE = frozenset({InstanceStatus.STOPPED, InstanceStatus.REMOVED})
"""A slot in one of these states has no current container (a deleted deployment's slots keep the id)."""


class ContainerLines(Protocol):
    """The last lines of one removed container (the reconciler's `drivers.KeptLogs`)."""

    @property
    def deployment_id(self) -> str: ...
    @property
    def replica(self) -> int: ...
    @property
    def container_id(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def lines(self) -> Sequence[LogLine]: ...


def keep(batches: Iterable[ContainerLines]) -> None:
    """Add (or, for a container already stored, replace) the rows of removed containers; no commit.

    Rows stored together keep the order they come in (`stored_at` one microsecond apart): the last of a
    replica's is its newest container. Lines of a deployment that is no more (its row deleted with its
    agent) are dropped.
    """
    batches = list(batches)
    now = utcnow()
    known = set(db.session.scalars(select(Deployment.id).where(Deployment.id.in_({b.deployment_id for b in batches}))))
    for number, batch in enumerate(batches):
        stored_at = now + timedelta(microseconds=number)
        if batch.deployment_id not in known:
            continue
        lines = [[_stamp(line.timestamp), line.stream, line.line] for line in batch.lines]
        row = db.session.scalar(
            select(ReplicaLog).where(
                ReplicaLog.deployment_id == batch.deployment_id, ReplicaLog.container_id == batch.container_id
            )
        )
        if row is None:
            db.session.add(
                ReplicaLog(
                    deployment_id=batch.deployment_id,
                    replica=batch.replica,
                    container_id=batch.container_id,
                    generation=batch.generation,
                    stored_at=stored_at,
                    lines=lines,
                )
            )
        elif len(lines) >= len(row.lines):  # a removal retried: the later read, unless it got less
            row.lines, row.stored_at = lines, stored_at
        db.session.flush()


def _stamp(timestamp: datetime | None) -> str | None:
    return timestamp.isoformat() if timestamp else None


def prune(*, retention_days: float) -> int:
    """Delete the rows stored more than `retention_days` ago; how many went. No commit."""
    cutoff = utcnow() - timedelta(days=retention_days)
    result = db.session.execute(delete(ReplicaLog).where(ReplicaLog.stored_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Stored:
    """What is stored of a deployment's removed containers: their lines, and which containers they are."""

    lines: list[dict[str, Any]]
    containers: frozenset[str]


def _as_dicts(row: ReplicaLog, since: datetime | None) -> list[dict[str, Any]]:
    found = []
    for stamp, stream, line in row.lines:
        timestamp = datetime.fromisoformat(stamp) if stamp else None
        if since is None or (timestamp is not None and timestamp > since):
            found.append({"timestamp": timestamp, "replica": row.replica, "stream": stream, "line": line})
    return found


def _newest_first(deployment_id: str, replica: int | None) -> Sequence[ReplicaLog]:
    query = select(ReplicaLog).where(ReplicaLog.deployment_id == deployment_id)
    if replica is not None:
        query = query.where(ReplicaLog.replica == replica)
    return db.session.scalars(query.order_by(ReplicaLog.stored_at.desc(), ReplicaLog.id)).all()


def stored(deployment: Deployment, *, tail: int | None, since: datetime | None, replica: int | None) -> Stored:
    """The last `tail` stored lines of the deployment (of one replica), merged by time.

    Every row is read: line timestamps are the engine's clock and `stored_at` the service's, so a row's
    storage time says nothing certain about its lines (a remote engine's clock may be ahead). Retention
    (`LOG_RETENTION_DAYS`) bounds how many there are.
    """
    rows = _newest_first(deployment.id, replica)
    lines = [line for row in rows for line in _as_dicts(row, since)]
    lines.sort(key=lambda line: line["timestamp"] or OLDEST)
    if tail is not None:
        lines = lines[-tail:] if tail else []
    return Stored(lines=lines, containers=frozenset(row.container_id for row in rows))


def _current_container(deployment: Deployment, replica: int) -> str | None:
    slot: Instance | None = next((i for i in deployment.instances if i.index == replica), None)
    if slot is None or slot.status in GONE:
        return None
    return slot.container_id


def previous_logs(
    actor: Principal, deployment_id: str, *, replica: int, tail: int = 100, since: datetime | None = None
) -> dict[str, Any]:
    """`{deployment_id, lines}`: the last `tail` lines of replica `replica`'s previous container.

    The previous container is the newest stored one that is not the replica's current container (a
    stopped or deleted deployment's replicas have none: their last container is the previous one).

    Raises:
        NotFound: no such deployment (or someone else's), or no previous container of that replica stored.
    """
    deployment = get_deployment(actor, deployment_id)
    current = _current_container(deployment, replica)
    row = next((r for r in _newest_first(deployment.id, replica) if r.container_id != current), None)
    if row is None:
        raise NotFound(
            f"Replica {replica} of deployment {deployment.id} has no previous container with stored lines.",
            details={"replica": replica},
        )
    lines = _as_dicts(row, since)
    return {"deployment_id": deployment.id, "lines": lines[-tail:] if tail else []}
