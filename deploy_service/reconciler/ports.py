"""Host ports for replicas with host networking: a free one from the configured range."""

from __future__ import annotations

import random
import socket


def free_port(used: set[int], port_range: tuple[int, int]) -> int:
    """A port in `port_range` not in `used` that can be bound now; it is added to `used`.

    Raises:
        RuntimeError: the range is exhausted.
    """
    low, high = port_range
    start = random.randint(low, high)
    for offset in range(high - low + 1):
        port = low + (start - low + offset) % (high - low + 1)
        if port in used:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
        used.add(port)
        return port
    raise RuntimeError(f"no free port left in HOST_PORT_RANGE {low}-{high}")
