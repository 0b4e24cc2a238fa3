"""Pure timing rules of the reconciler: restart backoff and engine-outage backoff."""

from __future__ import annotations


def restart_delay(attempt: int, *, base: float, maximum: float) -> float:
    """Seconds to wait before restart number `attempt` (1-based): base, 2·base, 4·base, ... capped."""
    if attempt < 1:
        return 0.0
    return float(min(maximum, base * (2 ** (attempt - 1))))


def engine_retry_delay(failures: int, *, base: float, maximum: float) -> float:
    """Seconds to wait after `failures` consecutive failed passes because the engine was down."""
    return restart_delay(failures, base=base, maximum=maximum)
