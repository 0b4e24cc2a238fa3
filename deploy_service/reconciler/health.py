"""HTTP health checks of replicas: a GET that answers 2xx in time is healthy.

`HealthChecker` keeps each replica's next due time in memory (per container), runs the due checks of a
pass in parallel, and records `health_passed` / `health_failed` events on changes. Without a configured
check, a replica that stayed up for the start-up grace period counts as healthy.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from deploy_service.models import Deployment, Instance
from deploy_service.reconciler.settings import ReconcileSettings
from deploy_service.services import lifecycle


def http_check(host: str, port: int, path: str, *, timeout: float) -> tuple[bool, str]:
    """GET `http://host:port/path`; returns (healthy, short reason). Never raises."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "deploy-service-healthcheck", "Connection": "close"})
        response = connection.getresponse()
        response.read(64 * 1024)
        healthy = 200 <= response.status < 300
        return healthy, f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return False, type(exc).__name__
    finally:
        connection.close()


class HealthChecker:
    def __init__(self, settings: ReconcileSettings, pool: ThreadPoolExecutor) -> None:
        self._settings = settings
        self._pool = pool
        self._due: dict[str, float] = {}

    def forget_all_but(self, containers: Iterable[str]) -> None:
        """Drop the schedules of containers that are gone."""
        keep = set(containers)
        self._due = {cid: due for cid, due in self._due.items() if cid in keep}

    def check(self, deployment: Deployment, instances: dict[int, Instance], now: datetime) -> float:
        """Run due health checks in parallel; returns seconds until the next one is due."""
        check = deployment.config.get("health_check")
        running = [i for i in instances.values() if i.running and i.port]
        if not check:
            wait = self._settings.resync
            for instance in running:
                up_for = (now - (instance.started_at or now)).total_seconds()
                if up_for >= self._settings.startup_grace:
                    if not instance.healthy:
                        instance.healthy = True
                else:
                    wait = min(wait, self._settings.startup_grace - up_for)
            return max(wait, 0.01)
        clock = time.monotonic()
        due = [i for i in running if self._due.get(str(i.container_id), 0.0) <= clock]
        interval = float(check.get("interval_seconds", 10.0))
        if due:
            results = list(
                self._pool.map(
                    lambda i: http_check(
                        i.host or self._settings.replica_host,
                        int(i.port),
                        check.get("path", "/health"),
                        timeout=float(check.get("timeout_seconds", 5.0)),
                    ),
                    due,
                )
            )
            for instance, (healthy, reason) in zip(due, results, strict=True):
                self._due[str(instance.container_id)] = time.monotonic() + interval
                self._record(deployment, instance, healthy, reason, int(check.get("retries", 3)))
        upcoming = [self._due.get(str(i.container_id), clock) - time.monotonic() for i in running]
        return max(min(upcoming, default=self._settings.resync), 0.01)

    def _record(self, deployment: Deployment, instance: Instance, healthy: bool, reason: str, retries: int) -> None:
        if healthy:
            instance.health_failures = 0
            if instance.healthy is not True:
                instance.healthy = True
                lifecycle.record_event(
                    deployment, "health_passed", f"Replica {instance.index} is healthy.", {"replica": instance.index}
                )
            return
        instance.health_failures += 1
        if instance.health_failures >= retries and instance.healthy is not False:
            instance.healthy = False
            lifecycle.record_event(
                deployment,
                "health_failed",
                f"Replica {instance.index} failed {instance.health_failures} health checks ({reason}).",
                {"replica": instance.index, "failures": instance.health_failures, "reason": reason},
            )
