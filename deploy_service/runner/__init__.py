"""The container engine seen through the runner interface, and the factory that picks a backend.

Everything outside this package imports the interface from here (or from `runner.base`) and gets a
backend from `create_runner`: `docker` (one engine, the reconciler runs replicas) or `swarm` (a Swarm
manager, which runs replicas as services; see `swarm_runner`).
"""

from __future__ import annotations

from deploy_service.runner.base import (
    LABEL_AGENT,
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_MANAGED,
    LABEL_REPLICA,
    BuildSpec,
    ExitInfo,
    ImageInfo,
    LogLine,
    ReplicaInfo,
    ReplicaSpec,
    Runner,
    ServiceInfo,
    ServiceRunner,
    ServiceSpec,
    Stats,
    TaskInfo,
    replica_name,
)
from deploy_service.runner.cancellation import Cancellation
from deploy_service.runner.docker_runner import DockerRunner
from deploy_service.runner.errors import (
    BuildCancelled,
    BuildFailed,
    EngineUnavailable,
    ImageUnavailable,
    ReplicaStartFailed,
    RunnerConfigError,
    RunnerError,
)
from deploy_service.runner.settings import RunnerSettings
from deploy_service.runner.swarm_runner import SwarmRunner

__all__ = [
    "BuildCancelled",
    "BuildFailed",
    "BuildSpec",
    "Cancellation",
    "DockerRunner",
    "EngineUnavailable",
    "ExitInfo",
    "ImageInfo",
    "ImageUnavailable",
    "LABEL_AGENT",
    "LABEL_DEPLOYMENT",
    "LABEL_GENERATION",
    "LABEL_MANAGED",
    "LABEL_REPLICA",
    "LogLine",
    "ReplicaInfo",
    "ReplicaSpec",
    "ReplicaStartFailed",
    "Runner",
    "RunnerConfigError",
    "RunnerError",
    "RunnerSettings",
    "ServiceInfo",
    "ServiceRunner",
    "ServiceSpec",
    "Stats",
    "SwarmRunner",
    "TaskInfo",
    "create_runner",
    "replica_name",
]

BACKENDS = ("docker", "swarm")


def create_runner(settings: RunnerSettings) -> Runner:
    """The backend named by `settings.backend` (`RUNNER`), configured from `settings`; no engine call is made.

    Raises:
        RunnerConfigError: an unknown backend, or a setting the backend refuses.
    """
    if settings.backend == "docker":
        return DockerRunner(settings)
    if settings.backend == "swarm":
        return SwarmRunner(settings)
    raise RunnerConfigError(f"RUNNER must be one of {', '.join(BACKENDS)}, got {settings.backend!r}")
