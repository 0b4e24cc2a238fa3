"""The status enums are the contract's strings, and "is this replica ready" is one rule."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from deploy_service.models import (
    AgentKind,
    AgentStatus,
    AlertKind,
    AlertSeverity,
    AlertStatus,
    DeliveryStatus,
    DeploymentStatus,
    DesiredState,
    Instance,
    InstanceStatus,
    RestartPolicy,
    is_ready,
    is_running,
)


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        (DeploymentStatus, ["deploying", "running", "ready", "stopped", "failed", "succeeded", "killed"]),
        (DesiredState, ["running", "stopped", "deleted"]),
        (InstanceStatus, ["pending", "running", "exited", "stopped", "removed", "succeeded", "failed"]),
        (AgentKind, ["service", "job"]),
        (RestartPolicy, ["always", "on-failure", "never"]),
        (AgentStatus, ["idle", "deployed", "stopped"]),
        (AlertStatus, ["active", "acknowledged", "resolved"]),
        (AlertSeverity, ["critical", "warning", "info"]),
        (
            AlertKind,
            [
                "deployment_failed",
                "crash_loop",
                "replica_unhealthy",
                "memory_high",
                "hallucination_rate_high",
                "error_rate_high",
                "rollout_failed",
            ],
        ),
        (DeliveryStatus, ["pending", "succeeded", "failed"]),
    ],
)
def test_members_are_the_contract_strings(enum: type, values: list[str]) -> None:
    assert [member.value for member in enum] == values
    for member, value in zip(enum, values, strict=True):
        # What is stored and written into bodies: the plain string, whichever way it is turned into text.
        assert member == value and str(member) == value and f"{member}" == value and hash(member) == hash(value)


@pytest.mark.parametrize(
    ("status", "container_id", "healthy", "running", "ready"),
    [
        ("running", "c1", True, True, True),
        ("running", "c1", None, True, False),
        ("running", "c1", False, True, False),
        ("running", None, True, False, False),
        ("exited", "c1", True, False, False),
        ("pending", None, None, False, False),
        ("removed", None, None, False, False),
        ("created", "c1", True, False, False),  # an engine state the reconciler may record
    ],
)
def test_ready_is_running_with_a_container_and_healthy(
    status: str, container_id: str | None, healthy: bool | None, running: bool, ready: bool
) -> None:
    assert is_running(status, container_id) is running
    assert is_ready(status, container_id, healthy) is ready
    instance = Instance(status=status, container_id=container_id, healthy=healthy)
    assert instance.running is running and instance.ready is ready


def test_running_is_the_same_rule_in_sql() -> None:
    query = select(Instance.id).where(Instance.running)
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert "deployment_instances.status = 'running' AND deployment_instances.container_id IS NOT NULL" in sql
