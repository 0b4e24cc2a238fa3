"""One failing part of the loop (leadership, wake-ups, a job): log its outage once, and back off.

The first failure logs a warning (with its traceback, once); later ones only at debug level; the
first success after them logs the outage's end at info. The wait before the next attempt doubles per
failure, from `base` up to `maximum`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from deploy_service.reconciler.timing import restart_delay

log = logging.getLogger(__name__)


class Outage:
    """The state of one part's current outage, if any."""

    def __init__(self, what: str, *, base: float, maximum: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.base = base
        self.maximum = maximum
        self._clock = clock
        self.failures = 0
        """Consecutive failures of the current outage (0: none under way)."""
        self.outages = 0
        """Outages seen so far (ended or not)."""
        self._since = 0.0

    def failed(self, error: BaseException) -> float:
        """Note one failure; returns seconds to wait before trying again."""
        self.failures += 1
        if self.failures == 1:
            self.outages += 1
            self._since = self._clock()
            log.warning(
                "reconciler: %s failed (%s: %s); retrying with backoff until it recovers",
                self.what,
                type(error).__name__,
                str(error).strip().splitlines()[0] if str(error).strip() else "",
                exc_info=error,
            )
        else:
            log.debug("reconciler: %s failed again (%d)", self.what, self.failures, exc_info=error)
        return restart_delay(self.failures, base=self.base, maximum=self.maximum)

    def recovered(self) -> None:
        """Note a success; ends the outage under way, if any."""
        if self.failures:
            log.info(
                "reconciler: %s recovered after %d failed attempt(s) in %.1f s",
                self.what,
                self.failures,
                self._clock() - self._since,
            )
            self.failures = 0
