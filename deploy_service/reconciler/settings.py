"""The reconciler's time-based rules and limits (`ReconcileSettings`), and one helper on them.

`ReconcileSettings` is defined with the service's other settings groups in `deploy_service.settings`,
where `settings_from` builds it with them from the one configuration; it is re-exported here, where
the reconciler's modules import it from.
"""

from __future__ import annotations

from datetime import datetime

from deploy_service.settings import LoopSettings, ReconcileSettings

__all__ = ["LoopSettings", "ReconcileSettings", "seconds_until"]


def seconds_until(moment: datetime, now: datetime) -> float:
    """Seconds from `now` until `moment`, never negative."""
    return max((moment - now).total_seconds(), 0.0)
