"""Whether this process leads right now, as background work sees it.

The loop (`loop.py`) holds the leader lock (`lock.py`) and tells a `Leadership` when it gains or loses
it. Work that outlives one pass — image preparation (`prepare.py`), webhook sends (`dispatch.py`) —
reads it from its own threads: it starts nothing while the process does not lead, and it writes a
result only if the process still leads in the *term* the work was started in. A term is one unbroken
stretch of leadership; losing the lock and taking it again starts a new one, because another process
may have led (and redone the work) in between.

This narrows, but cannot close, the window in which an old leader writes: the lock is checked once per
loop iteration, and a write may be in flight when it is lost. The writes it guards are idempotent
or version-checked, so a late one is harmless; it is stopped because it is wasted or duplicated.
"""

from __future__ import annotations

import threading


class Leadership:
    """Thread-safe: whether this process leads, and in which term."""

    def __init__(self, *, leading: bool = False) -> None:
        self._lock = threading.Lock()
        self._term = 1 if leading else 0
        self._leading = leading

    def leading(self) -> bool:
        """True while this process holds the leader lock."""
        with self._lock:
            return self._leading

    def term(self) -> int | None:
        """The current term while leading (capture it when starting work); None when not leading."""
        with self._lock:
            return self._term if self._leading else None

    def holds(self, term: int | None) -> bool:
        """Whether this process still leads in `term`: may work started in it write its result?"""
        with self._lock:
            return self._leading and term is not None and term == self._term

    def gain(self) -> None:
        """The lock was taken: a new term starts (no-op while already leading)."""
        with self._lock:
            if not self._leading:
                self._leading = True
                self._term += 1

    def lose(self) -> None:
        """The lock was lost or released: work of the ending term must not write."""
        with self._lock:
            self._leading = False
