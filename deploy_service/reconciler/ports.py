"""Host ports for replicas with host networking: a free one (containers), or a free block of 100 (services).

A port in use by anything on the engine host, not only by our replicas, is skipped. Where that is looked
at follows `REPLICA_HOST`, the engine host's address as the service reaches it:

- `127.0.0.1` or `localhost` (the default): the engine is this machine, and a host-mode replica binds
  every address of it, so a port counts as free only if it can be bound on `0.0.0.0` here;
- any other address (a remote engine host): a TCP connect to `REPLICA_HOST:port` that is accepted means
  the port is taken there; refused means free. A probe that neither connects nor is refused within
  `PORT_PROBE_TIMEOUT_SECONDS` counts as free: nothing can be told, and a replica that cannot bind
  its port exits and is restarted on another.

Service blocks (Swarm) are probed on this machine only: their tasks run on whichever node Swarm picks.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
"""`REPLICA_HOST` values that mean the engine runs on this machine."""


def free_port(used: set[int], port_range: tuple[int, int], *, host: str = "127.0.0.1", timeout: float = 1.0) -> int:
    """A port in `port_range` not in `used` that is free on the engine host at `host`; it is added to `used`.

    Args:
        used: ports already handed out (by this pass or to replicas the engine runs).
        port_range: `HOST_PORT_RANGE`.
        host: `REPLICA_HOST`.
        timeout: seconds one connect probe of a remote `host` may take.

    Raises:
        RuntimeError: the range is exhausted.
    """
    low, high = port_range
    start = random.randint(low, high)
    local = host in LOCAL_HOSTS
    for lingering in (False, True) if local else (False,):  # a remote probe cannot tell lingering ports apart
        for offset in range(high - low + 1):
            port = low + (start - low + offset) % (high - low + 1)
            if port in used:
                continue
            if local:
                free = _bindable(port, 1, lingering=lingering)
            else:
                free = _refused(host, port, timeout=timeout)
            if free:
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
    for lingering in (False, True):
        for block in blocks:
            if block in used or not _bindable(block * 100 + 1, replicas, lingering=lingering):
                continue
            used.add(block)
            return block
    raise RuntimeError(f"no free block of 100 ports left in HOST_PORT_RANGE {low}-{high}")


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Where Linux says which ports it hands to outgoing connections."""


def ephemeral_overlap(port_range: tuple[int, int], *, source: Path = EPHEMERAL_PORTS) -> tuple[int, int] | None:
    """The part of `port_range` that is also the kernel's ephemeral range (None: none, or not Linux).

    Any outgoing connection of the machine (a health check, a call, the engine's own) may hold such a port at
    the moment a replica binds it, and the replica then exits with "address in use": the range belongs below.
    """
    try:
        first, last = (int(value) for value in source.read_text().split())
    except (OSError, ValueError):
        return None
    low, high = max(port_range[0], first), min(port_range[1], last)
    return (low, high) if low <= high else None


def _bindable(first: int, count: int, *, lingering: bool = False) -> bool:
    """Whether ports `first` .. `first + count - 1` can all be bound now.

    With `lingering`, a port held only by closed connections waiting out TIME_WAIT counts as free, as it is
    for a server that binds with `SO_REUSEADDR` (busybox, Python's `http.server`, gunicorn, uvicorn, Go and
    Node all do): a replica closes its side of each connection first, so for a minute after it served, its
    port lingers, and a range whose replicas were busy a minute ago would otherwise look full (a Swarm
    rollout found no free block of 10 after a minute of calls). Callers try without it first, so a
    server that binds without `SO_REUSEADDR` gets a port with nothing lingering whenever there is one.
    """
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if lingering:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def _refused(host: str, port: int, *, timeout: float) -> bool:
    """Whether nothing accepts a TCP connection at `host:port` (refused, or no answer within `timeout`)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except OSError:  # refused, or nothing answered: see the module's note
        return True
