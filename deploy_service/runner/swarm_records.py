"""Docker Swarm documents, both ways: our `ServiceSpec` as a service spec, and services and tasks as our values.

Pure functions over the engine's JSON, so `swarm_runner` is left with the engine calls.

Host networking and ports: every task of a service on one node shares the host's ports, so each replica
gets its own `PORT`. Swarm expands Go templates (text/template builtins only) in a container's env, per
task, with `.Task.Slot` (1-based, a *string*). So `PORT` is `<block>` followed by the slot padded to two
digits (`port_block * 100 + slot`), and `REPLICA_INDEX` (slot - 1; templates have no arithmetic) is a
chain of `if eq .Task.Slot "n"` branches up to `MAX_REPLICAS`. The chain never depends on the replica
count, so scaling changes only the service's mode and never rolls its tasks. User env values are escaped
so they reach the agent verbatim (`{{` becomes `{{"{{"}}`).

Container labels are *not* templated by Swarm, so a task's replica index comes from its slot, and its
generation and port block from the labels of the task's own spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from deploy_service.runner.base import (
    LABEL_AGENT,
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_MANAGED,
    ServiceInfo,
    ServiceSpec,
    TaskInfo,
)
from deploy_service.runner.docker_common import parse_engine_time

__all__ = [
    "LABEL_PORT_BLOCK",
    "MAX_REPLICAS",
    "escape_template",
    "service_document",
    "service_info",
    "service_name",
    "task_info",
]

LABEL_PORT_BLOCK = "deploy-service.port-block"
MAX_REPLICAS = 99
"""Replicas of one deployment: slots 1..99 fit a block of 100 ports (the block's port 0 is never used).

The configuration refuses a `MAX_REPLICAS` above it for `RUNNER=swarm` (`config.SWARM_MAX_REPLICAS`)."""

_CREATED = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
_DEAD = {"rejected", "orphaned"}
SECOND_NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def service_name(deployment_id: str) -> str:
    return f"ds-{deployment_id}"


def escape_template(value: str) -> str:
    """`value` as Go template text that expands to `value` itself."""
    return value.replace("{{", '{{"{{"}}')


def port_template(block: int) -> str:
    return f"{block}{{{{if eq (len .Task.Slot) 1}}}}0{{{{end}}}}{{{{.Task.Slot}}}}"


def index_template(limit: int = MAX_REPLICAS) -> str:
    branches = "{{else if ".join(f'eq .Task.Slot "{slot}"}}}}{slot - 1}' for slot in range(1, limit + 1))
    return "{{if " + branches + "{{end}}"


def service_document(
    spec: ServiceSpec,
    *,
    namespace: str,
    user: str,
    image: str,
    pids_limit: int,
    tmpfs_mb: int,
    log_max_size: str,
    log_max_file: int,
) -> dict[str, Any]:
    """The full service spec (create or update body) of `spec`, hardened as far as Swarm allows."""
    labels = {
        LABEL_MANAGED: namespace,
        LABEL_DEPLOYMENT: spec.deployment_id,
        LABEL_AGENT: spec.agent_id,
        LABEL_GENERATION: str(spec.generation),
        LABEL_PORT_BLOCK: str(spec.port_block),
    }
    env = {key: escape_template(value) for key, value in spec.env.items()}
    env["PORT"] = port_template(spec.port_block)
    env["REPLICA_INDEX"] = index_template()
    container: dict[str, Any] = {
        "Image": image,
        "Labels": labels,
        "Env": [f"{key}={value}" for key, value in sorted(env.items())],
        "User": user,
        "ReadOnly": spec.read_only_rootfs,
        "CapabilityDrop": ["ALL"],
        "Init": False,
        "StopGracePeriod": int(spec.stop_timeout * SECOND_NS),
        "Mounts": [
            {
                "Type": "tmpfs",
                "Target": "/tmp",
                "TmpfsOptions": {"SizeBytes": tmpfs_mb * 1024 * 1024, "Mode": 0o1777},
            }
        ],
    }
    if spec.command is not None:
        container["Command"] = list(spec.command)
    memory = spec.memory_mb * 1024 * 1024
    return {
        "Name": service_name(spec.deployment_id),
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {
                "Limits": {"NanoCPUs": int(round(spec.cpu * 1e9)), "MemoryBytes": memory, "Pids": pids_limit},
            },
            "RestartPolicy": {
                "Condition": spec.restart_condition,
                "Delay": int(spec.restart_delay * SECOND_NS),
                "MaxAttempts": spec.restart_attempts,
                "Window": int(spec.restart_window * SECOND_NS),
            },
            "LogDriver": {"Name": "json-file", "Options": {"max-size": log_max_size, "max-file": str(log_max_file)}},
            "Networks": [{"Target": "host"}],
            "ForceUpdate": spec.generation,
        },
        "Mode": {"Replicated": {"Replicas": spec.replicas}},
        "UpdateConfig": {
            "Parallelism": spec.update_parallelism,
            "Delay": int(spec.update_delay * SECOND_NS),
            # Paused, not rolled back by the engine: the planner applies the previous spec again on ports of its
            # own (reconciler/plan.py), while Swarm's rollback would reuse ports the old tasks still hold. That
            # return itself is not watched: a failure of one of its tasks (or of a task of the failed update that
            # Swarm was still restarting) must not leave the service half way back.
            "FailureAction": "pause" if spec.watched else "continue",
            "Monitor": int(spec.update_monitor * SECOND_NS),
            "MaxFailureRatio": 0,
            "Order": "start-first",
        },
        "RollbackConfig": {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Order": "start-first"},
        "EndpointSpec": {"Mode": "dnsrr"},
    }


def _int_label(labels: Mapping[str, str], key: str) -> int | None:
    try:
        return int(labels[key])
    except (KeyError, ValueError):
        return None


def task_info(task: Mapping[str, Any], node_addresses: Mapping[str, str], default_host: str) -> TaskInfo | None:
    """One task of one of our services; None when it has no slot or lacks our labels."""
    labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    generation = _int_label(labels, LABEL_GENERATION)
    block = _int_label(labels, LABEL_PORT_BLOCK)
    slot = task.get("Slot")
    if generation is None or not isinstance(slot, int) or slot < 1:
        return None
    status = task.get("Status") or {}
    task_state = str(status.get("State") or "")
    if task_state in _CREATED:
        state = "created"
    elif task_state == "running":
        state = "running"
    elif task_state in _DEAD:
        state = "dead"
    else:
        state = "exited"
    container = status.get("ContainerStatus") or {}
    exit_code = container.get("ExitCode")
    address = node_addresses.get(str(task.get("NodeID") or ""), "")
    return TaskInfo(
        task_id=str(task["ID"]),
        index=slot - 1,
        generation=generation,
        state=state,
        task_state=task_state,
        desired_state=str(task.get("DesiredState") or ""),
        container_id=container.get("ContainerID") or None,
        host=default_host if address in ("", "0.0.0.0", "127.0.0.1") else address,
        port=block * 100 + slot if block is not None else None,
        exit_code=int(exit_code) if state in {"exited", "dead"} and exit_code is not None else None,
        error=str(status.get("Err") or ""),
        created_at=parse_engine_time(task.get("CreatedAt")),
        updated_at=parse_engine_time(task.get("UpdatedAt")),
    )


def service_info(service: Mapping[str, Any], tasks: list[TaskInfo]) -> ServiceInfo | None:
    """One of our services with its tasks; None when its labels are incomplete."""
    spec = service.get("Spec") or {}
    labels = spec.get("Labels") or {}
    generation = _int_label(labels, LABEL_GENERATION)
    if LABEL_DEPLOYMENT not in labels or generation is None:
        return None
    previous = (service.get("PreviousSpec") or {}).get("Labels") or {}
    blocks = {
        block for block in (_int_label(labels, LABEL_PORT_BLOCK), _int_label(previous, LABEL_PORT_BLOCK)) if block
    }
    update = service.get("UpdateStatus") or {}
    replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas")
    return ServiceInfo(
        service_id=str(service["ID"]),
        deployment_id=str(labels[LABEL_DEPLOYMENT]),
        agent_id=str(labels.get(LABEL_AGENT) or ""),
        generation=generation,
        replicas=int(replicas or 0),
        port_blocks=frozenset(blocks),
        port_block=_int_label(labels, LABEL_PORT_BLOCK),
        update_state=str(update.get("State") or ""),
        update_message=str(update.get("Message") or ""),
        tasks=tuple(sorted(tasks, key=lambda t: (t.index, t.created_at or _EPOCH))),
        previous_generation=_int_label(previous, LABEL_GENERATION),
    )
