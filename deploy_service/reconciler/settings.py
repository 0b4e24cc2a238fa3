"""The reconciler's time-based rules and limits, read from configuration (tests shrink them to seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deploy_service.config import parse_port_range


@dataclass(frozen=True)
class ReconcileSettings:
    """Every time-based rule of the reconciler."""

    resync: float
    tick: float
    progress_deadline: float
    startup_grace: float
    backoff_base: float
    backoff_max: float
    restart_budget: int
    stable_seconds: float
    stop_timeout: float
    workers: int
    port_range: tuple[int, int]
    replica_host: str
    sample_every: float = 15.0
    sample_retention_hours: float = 24.0
    alert_window: float = 3600.0
    """Seconds an OOM kill counts for the memory alert (`ALERT_WINDOW_MINUTES`)."""

    @classmethod
    def from_config(cls, config: Any) -> ReconcileSettings:
        return cls(
            resync=config["RECONCILE_INTERVAL_SECONDS"],
            tick=config["RECONCILE_TICK_SECONDS"],
            progress_deadline=config["PROGRESS_DEADLINE_SECONDS"],
            startup_grace=config["STARTUP_GRACE_SECONDS"],
            backoff_base=config["RESTART_BACKOFF_BASE_SECONDS"],
            backoff_max=config["RESTART_BACKOFF_MAX_SECONDS"],
            restart_budget=config["RESTART_BUDGET"],
            stable_seconds=config["RESTART_STABLE_SECONDS"],
            stop_timeout=config["CONTAINER_STOP_TIMEOUT"],
            workers=config["RECONCILE_WORKERS"],
            port_range=parse_port_range(config["HOST_PORT_RANGE"]),
            replica_host=config["REPLICA_HOST"],
            sample_every=config["METRICS_SAMPLE_SECONDS"],
            sample_retention_hours=config["METRICS_RETENTION_HOURS"],
            alert_window=config["ALERT_WINDOW_MINUTES"] * 60,
        )


@dataclass(frozen=True)
class LoopSettings:
    """How the loop leads, retries and reports that it is alive (see README's configuration table)."""

    standby_retry: float = 2.0
    """How often a standby tries to take the lead, and a leader checks that it still holds it."""
    retry_base: float = 1.0
    """The first wait after a failure of leadership, wake-ups or a job; doubled per failure after it."""
    retry_max: float = 30.0
    """The longest wait between retries."""
    connect_timeout: int = 5
    """Seconds to wait for PostgreSQL to accept the leader lock's and the wake-ups' connections."""
    engine_backoff_max: float = 30.0
    """The longest wait between passes while the container engine does not answer."""
    stale: float = 60.0
    """Readiness fails when no pass has completed for this long; the heartbeat is written 4 times as often."""

    @classmethod
    def from_config(cls, config: Any) -> LoopSettings:
        return cls(
            standby_retry=config["RECONCILER_STANDBY_RETRY_SECONDS"],
            retry_base=config["RECONCILER_RETRY_BASE_SECONDS"],
            retry_max=config["RECONCILER_RETRY_MAX_SECONDS"],
            connect_timeout=config["RECONCILER_DB_CONNECT_TIMEOUT_SECONDS"],
            engine_backoff_max=config["ENGINE_BACKOFF_MAX_SECONDS"],
            stale=config["RECONCILER_STALE_SECONDS"],
        )


def seconds_until(moment: datetime, now: datetime) -> float:
    """Seconds from `now` until `moment`, never negative."""
    return max((moment - now).total_seconds(), 0.0)
