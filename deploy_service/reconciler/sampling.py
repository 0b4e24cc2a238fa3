"""Resource sampling: every `METRICS_SAMPLE_SECONDS`, one-shot stats of each running replica, in parallel.

One-shot stats answer at once (no two-second engine sample), and CPU is computed against this
process's previous sample of the same container. Rows older than `METRICS_RETENTION_HOURS` are
deleted in the same round. Sampling never runs on a request path: it is a job of the reconciler's loop
(`jobs.SampleJob`), beside convergence. `RecentOom` is what the two share: the executor notes a replica
killed for running out of memory; the telemetry alert rules of a sampling round read it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import delete

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.models import ContainerSample, Deployment
from deploy_service.models.types import utcnow
from deploy_service.reconciler.settings import ReconcileSettings
from deploy_service.runner.base import Runner, Stats

log = logging.getLogger(__name__)


class RecentOom:
    """When each deployment last had a replica killed for running out of memory (monotonic clock)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at: dict[str, float] = {}
        self._lock = threading.Lock()

    def note(self, deployment_id: str) -> None:
        with self._lock:
            self._at[deployment_id] = self._clock()

    def within(self, seconds: float) -> set[str]:
        """Deployments with an OOM kill in the last `seconds`; older notes are forgotten."""
        now = self._clock()
        with self._lock:
            self._at = {d: at for d, at in self._at.items() if now - at < seconds}
            return set(self._at)


class Sampler:
    def __init__(self, runner: Runner, settings: ReconcileSettings, pool: ThreadPoolExecutor) -> None:
        self._runner = runner
        self._settings = settings
        self._pool = pool
        self._previous: dict[str, Stats] = {}
        self._next_round = 0.0

    def seconds_until_due(self) -> float:
        return max(self._next_round - time.monotonic(), 0.0)

    def maybe_sample(self, deployments: list[Deployment]) -> bool:
        """Take one round of samples if it is due (the caller commits); True when it did."""
        if time.monotonic() < self._next_round:
            return False
        self._next_round = time.monotonic() + self._settings.sample_every
        targets = [
            (deployment.id, instance.index, str(instance.container_id))
            for deployment in deployments
            for instance in deployment.instances
            if instance.running
        ]
        results = list(self._pool.map(lambda target: self._stats(target[2]), targets))
        for (deployment_id, replica, container_id), stats in zip(targets, results, strict=True):
            if stats is None:
                continue
            db.session.add(
                ContainerSample(
                    deployment_id=deployment_id,
                    replica=replica,
                    container_id=container_id,
                    cpu_percent=stats.cpu_percent_since(self._previous.get(container_id)),
                    memory_bytes=stats.memory_bytes,
                    memory_limit_bytes=stats.memory_limit_bytes,
                    sampled_at=stats.sampled_at,
                )
            )
            self._previous[container_id] = stats
        live = {container_id for _, _, container_id in targets}
        self._previous = {cid: stats for cid, stats in self._previous.items() if cid in live}
        cutoff = utcnow() - timedelta(hours=self._settings.sample_retention_hours)
        db.session.execute(delete(ContainerSample).where(ContainerSample.sampled_at < cutoff))
        return True

    def _stats(self, container_id: str) -> Stats | None:
        try:
            return self._runner.stats(container_id)
        except EngineUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a container that just went away has no sample
            log.debug("no stats for %s: %s", container_id, exc)
            return None
