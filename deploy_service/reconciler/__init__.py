"""The reconciler: compares what the database wants with what the engine runs, and acts.

- `loop.Reconciler` runs the jobs (`jobs.py`: converge, sample, dispatch webhooks, prune stored logs), woken at once by
  desired-state changes, resynced periodically, backing off while the engine is down, under a leader lock
  so exactly one is active.
- `plan.py` decides: from one deployment's desired state, its observed replicas, the settings and `now`,
  the actions to take and the status (no database, engine or Flask).
- `executor.Executor` acts: one pass, carrying each deployment's plan out, database writes itself and
  engine calls through a driver (`drivers.py`: containers on one engine, or Swarm services).
- beside them: `prepare.py` (images, in the background), `health.py` (HTTP checks), `sampling.py`,
  `dispatch.py`, `lock.py` and `wakeup.py`.
"""

from deploy_service.reconciler.executor import Executor
from deploy_service.reconciler.loop import Reconciler
from deploy_service.reconciler.settings import ReconcileSettings

__all__ = ["Executor", "ReconcileSettings", "Reconciler"]
