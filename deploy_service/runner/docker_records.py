"""Reading the engine's records about containers as the runner's value objects.

Pure functions over the engine's JSON, so the runner's methods are left with the engine call and its
error translation.

A replica's identity lives in its container's labels (deployment, agent, index, generation, and the
port it listens on), so a listing needs no database and no second engine call. The engine describes a
container in two shapes, a row of the list endpoint and the inspect document; each has its reader
(`info_from_list`, `info_from_inspect`), and both agree on what they return:

- a container whose identity labels are missing or malformed is not ours to report (None);
- the port is the one a client can reach: the labelled port in host mode, the published host port in
  bridge mode (None when nothing is published); the host is the one the caller names (`REPLICA_HOST`:
  where the service reaches the engine host's ports, in either mode);
- an exit code only for a container that has exited.

`exit_info_from_state` reads how a container ended, and `stats_from_sample` turns a one-shot stats
sample into memory (without the reclaimable page cache, as `docker stats` shows it) and CPU counters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from deploy_service.runner.base import (
    LABEL_AGENT,
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_REPLICA,
    ExitInfo,
    ReplicaInfo,
    Stats,
)
from deploy_service.runner.docker_common import parse_engine_time

__all__ = ["LABEL_PORT", "exit_info_from_state", "info_from_inspect", "info_from_list", "stats_from_sample"]

LABEL_PORT = "deploy-service.port"
"""The container port the replica listens on (host mode: also its host port)."""

_EXITED_STATUS = re.compile(r"^Exited \((-?\d+)\)")


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


def info_from_list(row: Mapping[str, Any], *, host: str = "127.0.0.1") -> ReplicaInfo | None:
    """The replica a row of the engine's container list describes; None when it is not a replica."""
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
        host=host,
        port=port,
        created_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else None,
    )


def info_from_inspect(data: Mapping[str, Any], *, host: str = "127.0.0.1") -> ReplicaInfo | None:
    """The replica a container's inspect document describes; None when it is not a replica."""
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
        host=host,
        port=port,
        created_at=parse_engine_time(data.get("Created")),
    )


def exit_info_from_state(state: Mapping[str, Any]) -> ExitInfo:
    """How a container ended, from the `State` of its inspect document."""
    exit_code = state.get("ExitCode")
    return ExitInfo(
        exit_code=int(exit_code) if exit_code is not None else None,
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        finished_at=parse_engine_time(state.get("FinishedAt")),
    )


def stats_from_sample(data: Mapping[str, Any]) -> Stats:
    """A one-shot stats sample of the engine as `Stats`, stamped now."""
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
