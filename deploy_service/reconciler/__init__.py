"""The reconciler: decides *when* to act by comparing what the database wants with what the engine runs.

`loop.Reconciler` runs passes (woken at once by desired-state changes, resynced periodically, backing
off while the engine is down) under a leader lock so exactly one is active; `converge.Converger` is
one pass. What to do on the engine is always asked of the runner.
"""

from deploy_service.reconciler.converge import Converger
from deploy_service.reconciler.loop import Reconciler
from deploy_service.reconciler.settings import ReconcileSettings

__all__ = ["Converger", "ReconcileSettings", "Reconciler"]
