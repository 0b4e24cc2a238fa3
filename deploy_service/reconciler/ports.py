"""Host ports for replicas with host networking: a free one (containers), or a free block of 100 (services).

Both probe by binding: a port in use by anything on the host, not only by our replicas, is skipped.
"""

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
        if port in used or not _bindable(port, 1):
            continue
        used.add(port)
        return port
    raise RuntimeError(f"no free port left in HOST_PORT_RANGE {low}-{high}")


def free_block(used: set[int], port_range: tuple[int, int], replicas: int) -> int:
    """A block of 100 host ports inside `port_range`, unused, whose first `replicas` ports bind now.

    Replica `i` of a service listens on `block * 100 + i + 1`; a new generation gets a new block.

    Raises:
        RuntimeError: none left.
    """
    low, high = port_range
    blocks = [block for block in range((low + 99) // 100, high // 100 + 1) if block * 100 + 99 <= high]
    if blocks:
        start = random.randrange(len(blocks))
        blocks = blocks[start:] + blocks[:start]
    for block in blocks:
        if block in used or not _bindable(block * 100 + 1, replicas):
            continue
        used.add(block)
        return block
    raise RuntimeError(f"no free block of 100 ports left in HOST_PORT_RANGE {low}-{high}")


def _bindable(first: int, count: int) -> bool:
    """Whether ports `first` .. `first + count - 1` can all be bound now."""
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True
