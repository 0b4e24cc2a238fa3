"""The reconciler's loop: leadership, wake-ups, and the jobs it runs while it leads.

Embedded in `python app.py` as a daemon thread, or run alone by `flask reconcile` next to gunicorn.
Whichever way, a leader lock (`lock.py`) makes exactly one active; the others stand by and take over
if it dies. While leading, the loop runs each due job (`jobs.py`), then waits (`wakeup.py`) until the
soonest job is due or the desired state changes, and at least every `standby_retry` seconds checks
that it still holds the lock.

The loop never dies of an exception: a failure to take or check the lock (the database is away), to
wait for wake-ups, or of a job, is an outage of that part (`outage.py`): logged once when it starts
and once when it ends, and retried with a capped backoff. Leadership is taken again when the database
returns. While the process does not lead, `leadership` says so, and background work stops writing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Flask

from deploy_service.errors import EngineUnavailable
from deploy_service.extensions import db
from deploy_service.reconciler.executor import Executor
from deploy_service.reconciler.heartbeat import Heartbeat
from deploy_service.reconciler.jobs import ConvergeJob, DispatchJob, Job, PruneInvocationsJob, PruneLogsJob, SampleJob
from deploy_service.reconciler.leadership import Leadership
from deploy_service.reconciler.lock import LeaderLock
from deploy_service.reconciler.outage import Outage
from deploy_service.reconciler.ports import ephemeral_overlap
from deploy_service.reconciler.sampling import RecentOom
from deploy_service.reconciler.settings import LoopSettings, ReconcileSettings
from deploy_service.reconciler.wakeup import Waiter
from deploy_service.runner.base import Runner
from deploy_service.services.engine import EXTENSION_KEY
from deploy_service.services.notify import local_wakeup
from deploy_service.settings import settings_for

log = logging.getLogger(__name__)
LEADERSHIP, WAKEUPS = "leadership", "wake-ups"
RUNNING_KEY = "deploy_service.running_reconciler"
"""`app.extensions[RUNNING_KEY]`: the reconciler loop this process runs for the app, while it runs (none in
a web worker beside `flask reconcile`): `GET /v1/system/status` says whether it leads."""


class Reconciler:
    """The loop, its leadership and its jobs."""

    def __init__(
        self,
        app: Flask,
        *,
        runner: Runner | None = None,
        settings: ReconcileSettings | None = None,
        loop_settings: LoopSettings | None = None,
        lock: LeaderLock | None = None,
        waiter: Callable[[], Waiter] | None = None,
    ) -> None:
        """Build the loop (nothing runs until `start`, `run_forever` or `run_once`).

        Args:
            lock: the leader lock (default: one on the app's database).
            waiter: makes the wake-up waiter, when the loop starts (default: one on the app's database).
        """
        self.app = app
        self.runner: Runner = runner or app.extensions[EXTENSION_KEY]
        self.settings = settings or settings_for(app).reconcile
        self.loop_settings = loop_settings or settings_for(app).loop
        with app.app_context():
            engine = db.engine
        timeout = self.loop_settings.connect_timeout
        self.lock = lock or LeaderLock(engine, connect_timeout=timeout)
        self._make_waiter = waiter or (lambda: Waiter(engine, connect_timeout=timeout))
        self.leadership = Leadership()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ended = threading.Event()
        """Set when the thread started by `start` has ended, whether asked to or not."""

        oom = RecentOom()
        self.executor = Executor(
            app, self.runner, self.settings, wake=local_wakeup.set, oom=oom, leadership=self.leadership
        )
        heartbeat = Heartbeat(every=self.loop_settings.stale / 4)
        self.converge_job = ConvergeJob(
            app, self.executor, heartbeat=heartbeat, engine_backoff_max=self.loop_settings.engine_backoff_max
        )
        self.jobs: list[Job] = [
            self.converge_job,
            SampleJob(app, self.runner, self.settings, oom=oom, alert_window=self.settings.alert_window),
            DispatchJob(app, self.settings, leadership=self.leadership),
            PruneLogsJob(app, self.settings),
            PruneInvocationsJob(app, self.settings),
        ]
        """What the leader runs, each when it asked to run again (a new kind of work: one more entry)."""
        self.outages: dict[str, Outage] = {}
        """The outage state of the lock (`leadership`), the waiter (`wake-ups`) and each job, by name."""
        self._closed = False
        self._looping = False

    def outage(self, what: str) -> Outage:
        """The outage state of `what` (`leadership`, `wake-ups` or a job's name), made on first use."""
        if what not in self.outages:
            settings = self.loop_settings
            self.outages[what] = Outage(what, base=settings.retry_base, maximum=settings.retry_max)
        return self.outages[what]

    @property
    def passes(self) -> int:
        """Converge passes attempted so far."""
        return self.converge_job.passes

    @property
    def engine_failures(self) -> int:
        """Consecutive converge passes the engine did not answer."""
        return self.converge_job.engine_failures

    def run_once(self) -> float:
        """One converge pass, then every other job, each in a fresh app context; seconds until the next
        pass is wanted.

        Outside `run_forever` (tests, benches) it takes no lock and treats this process as the leader;
        while the loop runs, the loop's leadership stands. The other jobs run whether due or not (each
        does nothing when it has nothing due); their failures are logged, an engine outage raised.

        Raises:
            EngineUnavailable: the engine did not answer (nothing changed).
        """
        if not self._looping:
            self.leadership.gain()
        wanted = self.converge_job.pass_once()
        for job in self.jobs[1:]:
            try:
                wanted = min(wanted, job.run())
            except EngineUnavailable:
                raise
            except Exception:
                log.exception("the %s job failed", job.name)
        return max(wanted, 0.01)

    # -- the loop ---------------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Lead (or stand by) and run the jobs until `stop()`; no exception of a part ends it."""
        due = {job.name: 0.0 for job in self.jobs}
        waiter: Waiter | None = None
        waiter_retry_at = 0.0
        self._looping = True
        self.leadership.lose()
        self.app.extensions[RUNNING_KEY] = self
        try:
            while not self._stop.is_set():
                delay = self._lead(due)
                if delay is not None:
                    self._stop.wait(delay)
                    continue
                self._run_due(due)
                if self._stop.is_set():
                    break
                timeout = min(min(due.values()) - time.monotonic(), self.loop_settings.standby_retry)
                if waiter is None and time.monotonic() >= waiter_retry_at:
                    waiter, waiter_retry_at = self._open_waiter()
                woken, waiter = self._wait(waiter, timeout)
                if woken:
                    due = dict.fromkeys(due, 0.0)
        finally:
            self._looping = False
            self.leadership.lose()
            if self.app.extensions.get(RUNNING_KEY) is self:
                del self.app.extensions[RUNNING_KEY]
            if waiter is not None:
                _quietly(waiter.close, "closing the wake-up waiter")
            _quietly(self.lock.release, "releasing the leader lock")
            self.close()

    def _lead(self, due: dict[str, float]) -> float | None:
        """Take or keep the lock; None when leading, else seconds to wait before trying again."""
        outage = self.outage(LEADERSHIP)
        try:
            held = self.lock.try_acquire()
        except Exception as exc:  # noqa: BLE001 - the database is away: an outage, retried
            _quietly(self.lock.release, "releasing the leader lock")
            self._stand_by()
            return outage.failed(exc)
        outage.recovered()
        if not held:
            self._stand_by()
            return self.loop_settings.standby_retry
        if not self.leadership.leading():
            log.info("reconciler is the leader")
            overlap = ephemeral_overlap(self.settings.port_range)
            if overlap is not None:
                log.warning(
                    "ports %s-%s of HOST_PORT_RANGE are also the kernel's ephemeral ports: with host networking a "
                    "replica may find its port held by an outgoing connection; keep the range below them",
                    *overlap,
                )
            self.leadership.gain()
            due.update(dict.fromkeys(due, 0.0))  # pick up at once where the last leader left off
        return None

    def _stand_by(self) -> None:
        if self.leadership.leading():
            log.warning("reconciler lost leadership; standing by")
        self.leadership.lose()

    def _run_due(self, due: dict[str, float]) -> None:
        """Run each job whose time has come, while still leading and not asked to stop."""
        for job in self.jobs:
            if self._stop.is_set() or not self.leadership.leading():
                return
            if due[job.name] > time.monotonic():
                continue
            outage = self.outage(job.name)
            try:
                delay = job.run()
            except Exception as exc:  # noqa: BLE001 - a job's failure is an outage of that job, retried
                delay = outage.failed(exc)
            else:
                outage.recovered()
            due[job.name] = time.monotonic() + max(delay, 0.0)

    def _open_waiter(self) -> tuple[Waiter | None, float]:
        """A new waiter, or None and when to try again."""
        outage = self.outage(WAKEUPS)
        try:
            waiter = self._make_waiter()
        except Exception as exc:  # noqa: BLE001 - without a waiter the loop sleeps; passes still run
            return None, time.monotonic() + outage.failed(exc)
        return waiter, 0.0

    def _wait(self, waiter: Waiter | None, timeout: float) -> tuple[bool, Waiter | None]:
        """Wait up to `timeout`; returns (woken early, the waiter to keep using)."""
        if waiter is None:
            self._stop.wait(max(timeout, 0.0))
            return False, None
        outage = self.outage(WAKEUPS)
        try:
            woken = waiter.wait(timeout)
        except Exception as exc:  # noqa: BLE001 - dropped and reopened after a backoff
            _quietly(waiter.close, "closing the wake-up waiter")
            self._stop.wait(min(outage.failed(exc), max(timeout, 0.0)))
            return False, None
        outage.recovered()
        return woken, waiter

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, *, on_exit: Callable[[], None] | None = None) -> threading.Thread:
        """Run in a daemon thread; `on_exit` is called when it ends (asked to or not)."""

        def run() -> None:
            try:
                self.run_forever()
            except Exception:  # noqa: BLE001 - logged here; `ended` (and `on_exit`) tell the owner
                log.exception("the reconciler loop crashed")
            finally:
                if not self._stop.is_set():
                    log.error("the reconciler loop ended without being asked to stop")
                self.ended.set()
                if on_exit is not None:
                    on_exit()

        self.ended.clear()
        self._thread = threading.Thread(target=run, name="reconciler", daemon=True)
        self._thread.start()
        # A container that ends wakes the loop at once (a job's exit 0, a crash), rather than at the next
        # tick or resync; the watcher ends by itself soon after `stop` (it is never joined).
        threading.Thread(
            target=self.runner.watch_exits,
            args=(local_wakeup.set, self._stop),
            kwargs={"retry": self.loop_settings.retry_base},
            name="reconciler-exits",
            daemon=True,
        ).start()
        return self._thread

    @property
    def thread(self) -> threading.Thread | None:
        """The thread started by `start`, until `stop`."""
        return self._thread

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end, and wait up to `timeout` seconds for its thread."""
        self._stop.set()
        local_wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        """Close every job (their threads and connections); safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self.leadership.lose()
        for job in self.jobs:
            _quietly(job.close, f"closing the {job.name} job")


def _quietly(action: Callable[[], object], what: str) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - cleaning up must not stop the rest of the cleanup
        log.warning("reconciler: %s failed", what, exc_info=True)
