"""Which ready replica an `interact` call goes to, and which ones after it when it cannot connect.

Pure functions over replica indexes: no database, no HTTP, no Flask. `interact` asks for an order of
the ready replicas and tries them in it, going on to the next only while a call could not connect.

- Without a session id: round-robin. The per-deployment turn counter lives in the process (each
  worker has its own; together they still spread calls evenly), and the order is the ready replicas
  from the one whose turn it is, then the next in turn.
- With `X-Session-Id`: rendezvous (highest random weight) hashing. Every ready replica gets the score
  `blake2b(session id, replica index)`, and the order is by score, highest first. It needs no shared
  state (every worker computes the same order from the same set of ready replicas), and when a replica
  leaves the set only the sessions whose highest score was that replica's move, each to its second;
  when it comes back, exactly those sessions return.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator, Sequence

_turns: dict[str, Iterator[int]] = {}
_turns_lock = threading.Lock()


def session_score(session_id: str, index: int) -> int:
    """The rendezvous score of replica `index` for `session_id`: the same on every worker and every run."""
    digest = hashlib.blake2b(f"{index}\0{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def sticky_order(session_id: str, indexes: Sequence[int]) -> list[int]:
    """The replicas `indexes` in the order a call of `session_id` tries them (its pinned replica first)."""
    return sorted(indexes, key=lambda index: (session_score(session_id, index), -index), reverse=True)


def rotation(indexes: Sequence[int], turn: int) -> list[int]:
    """The replicas `indexes` from the one whose turn `turn` is, then the next in turn, wrapping around."""
    if not indexes:
        return []
    start = turn % len(indexes)
    return [*indexes[start:], *indexes[:start]]


def next_turn(deployment_id: str) -> int:
    """This process's next round-robin turn for `deployment_id` (0, 1, 2, ...)."""
    with _turns_lock:
        turns = _turns.setdefault(deployment_id, itertools.count())
        return next(turns)


def call_order(deployment_id: str, indexes: Sequence[int], *, session_id: str | None) -> list[int]:
    """The order in which a call tries the ready replicas `indexes` (sorted by index).

    Args:
        deployment_id: whose round-robin turn a call without a session takes.
        indexes: the ready replicas' indexes.
        session_id: the caller's `X-Session-Id`, or None for round-robin.
    """
    ordered = sorted(indexes)
    if session_id is not None:
        return sticky_order(session_id, ordered)
    return rotation(ordered, next_turn(deployment_id))
