"""Per-deployment metrics: the latest resource sample of each replica, restarts, uptime, invocations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from deploy_service.models import SERVING, WITHOUT_REPLICAS, ContainerSample, Invocation, Principal
from deploy_service.models.types import utcnow
from deploy_service.schemas.deployment import replica_counts
from deploy_service.services.agent_stats import invocation_stats
from deploy_service.services.deployments import get_deployment
from deploy_service.services.samples import latest_samples


def deployment_metrics(actor: Principal, deployment_id: str, *, hours: int = 24) -> dict[str, Any]:
    """`GET /v1/deployments/<id>/metrics`: sums over replicas of their latest samples, and per replica."""
    deployment = get_deployment(actor, deployment_id)
    now = utcnow()
    current = {
        instance.container_id: instance
        for instance in deployment.instances
        if instance.container_id and instance.index < deployment.replicas_desired
    }
    samples: dict[str, ContainerSample] = {}
    if deployment.status not in WITHOUT_REPLICAS:
        samples = latest_samples(deployment.id, (str(container_id) for container_id in current))
    instances = []
    for container_id, instance in sorted(current.items(), key=lambda item: item[1].index):
        found = samples.get(str(container_id))
        instances.append(
            {
                "index": instance.index,
                "container_id": container_id,
                "status": instance.status,
                "healthy": instance.healthy,
                "restarts": instance.restarts,
                "cpu_percent": found.cpu_percent if found else None,
                "memory_bytes": found.memory_bytes if found else None,
                "memory_limit_bytes": found.memory_limit_bytes if found else None,
                "sampled_at": found.sampled_at if found else None,
            }
        )
    sampled = list(samples.values())
    running = deployment.status in SERVING and deployment.started_at is not None
    cpu = [sample.cpu_percent for sample in sampled if sample.cpu_percent is not None]
    return {
        "deployment_id": deployment.id,
        "status": deployment.status,
        "replicas": replica_counts(deployment),
        "restarts": sum(instance.restarts for instance in deployment.instances),
        "uptime_seconds": round((now - deployment.started_at).total_seconds(), 3) if running else 0.0,  # type: ignore[operator]
        "cpu_percent": round(sum(cpu), 2) if cpu else None,
        "memory_bytes": sum(sample.memory_bytes for sample in sampled) if sampled else None,
        "memory_limit_bytes": sum(sample.memory_limit_bytes for sample in sampled) if sampled else None,
        "invocations": invocation_stats(Invocation.deployment_id == deployment.id, now - timedelta(hours=hours)),
        "window_hours": hours,
        "sampled_at": max((sample.sampled_at for sample in sampled), default=None),
        "instances": instances,
    }
