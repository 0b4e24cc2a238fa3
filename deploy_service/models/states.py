"""The statuses of deployments and their replicas, defined once (stored and answered as these strings)."""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
    DEPLOYING = "deploying"
    RUNNING = "running"
    READY = "ready"
    STOPPED = "stopped"
    FAILED = "failed"
    KILLED = "killed"


class InstanceStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    EXITED = "exited"
    STOPPED = "stopped"
