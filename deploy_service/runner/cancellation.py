"""Stopping a build from another thread: one `Cancellation` per build, set when its deployment stops or is deleted.

The preparer (`reconciler.prepare`) makes one for each build it starts and cancels it when the
deployment is no longer meant to run; the runner looks at it where a build can wait (the clone's
output loop, between the engine's build chunks) and hooks what must be interrupted at once (the
open build stream, whose blocked read cannot see a flag). A cancelled build raises `BuildCancelled`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from deploy_service.runner.errors import BuildCancelled

__all__ = ["BuildCancelled", "Cancellation"]

log = logging.getLogger(__name__)


class Cancellation:
    """A one-way switch: `cancel()` once, from any thread; the build it was given stops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._hooks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Cancel, and call the hooks registered now (each once; a failing hook is logged)."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            _call(hook)

    def check(self) -> None:
        """Raises `BuildCancelled` once cancelled."""
        if self._cancelled:
            raise BuildCancelled()

    @contextlib.contextmanager
    def hooked(self, hook: Callable[[], None]) -> Iterator[None]:
        """Call `hook` if the build is cancelled while the block runs (at once if it already is)."""
        with self._lock:
            late = self._cancelled
            if not late:
                self._hooks.append(hook)
        if late:
            _call(hook)
        try:
            yield
        finally:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)


def _call(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:
        log.exception("a build's cancellation hook failed")
