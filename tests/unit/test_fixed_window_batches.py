"""`ratelimit.FixedWindow`: a busy caller's hits are taken from the storage in batches, never admitting more
than the limit across processes, exact near it, and with the headers' figures still right.

Two `FixedWindow`s on one storage are two worker processes on one Redis (the storage is what they share).
"""

from __future__ import annotations

import random
from typing import Any

from limits import parse
from limits.storage import MemoryStorage

from deploy_service.ratelimit import FixedWindow


class CountingStorage(MemoryStorage):
    """limits' memory storage, counting the increments (the calls a Redis would answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.increments = 0

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self.increments += 1
        return super().incr(key, expiry, amount=amount)


def _admitted(window: FixedWindow, limit: Any, hits: int, caller: str = "user:a") -> int:
    return sum(window.hit(limit, caller, "route") for _ in range(hits))


def test_a_busy_callers_hits_cost_a_storage_call_per_batch_not_per_hit() -> None:
    storage = CountingStorage()
    window = FixedWindow(storage, batch_max=64)
    limit = parse("100000000/minute")
    assert _admitted(window, limit, 5000) == 5000
    assert storage.increments < 5000 / 64 + 40, storage.increments  # the first 16 one by one, then growing batches
    assert storage.get(limit.key_for("user:a", "route")) >= 5000, "every admitted hit is counted in the storage"


def test_batch_max_1_asks_the_storage_on_every_hit() -> None:
    storage = CountingStorage()
    window = FixedWindow(storage, batch_max=1)
    assert _admitted(window, parse("1000/minute"), 300) == 300
    assert storage.increments == 300


def test_two_processes_never_admit_more_than_the_limit_and_not_much_less() -> None:
    rng = random.Random(7)
    for limit_value in (50, 600, 5000):
        storage = CountingStorage()
        workers = [FixedWindow(storage, batch_max=64), FixedWindow(storage, batch_max=64)]
        limit = parse(f"{limit_value}/minute")
        admitted = sum(rng.choice(workers).hit(limit, "user:a", "route") for _ in range(3 * limit_value))
        assert admitted <= limit_value
        # What batches can withhold: the units one process took and the other could not use.
        assert admitted >= limit_value - limit_value // 8 - 2, (limit_value, admitted)


def test_a_skewed_caller_loses_at_most_a_batch_of_the_first_process() -> None:
    storage = CountingStorage()
    first, second = FixedWindow(storage, batch_max=64), FixedWindow(storage, batch_max=64)
    limit = parse("1000/minute")
    served_first = _admitted(first, limit, 500)
    served_second = _admitted(second, limit, 1000)
    assert served_first == 500
    assert 1000 - 500 - 64 <= served_second <= 500


def test_near_a_small_limit_every_hit_is_counted_exactly() -> None:
    storage = CountingStorage()
    window = FixedWindow(storage, batch_max=64)
    limit = parse("5/minute")
    results = [window.hit(limit, "user:a", "route") for _ in range(7)]
    assert results == [True] * 5 + [False] * 2
    assert storage.increments == 5, "five admitted one by one; then the count is at the limit: no call"
    assert window.get_window_stats(limit, "user:a", "route").remaining == 0


def test_a_caller_past_its_limit_is_refused_without_a_storage_call_until_the_window_ends() -> None:
    storage = CountingStorage()
    window = FixedWindow(storage, batch_max=64)
    limit = parse("100/minute")
    assert _admitted(window, limit, 1000) == 100
    calls = storage.increments
    assert calls <= 100 and _admitted(window, limit, 1000) == 0 and storage.increments == calls
    stats = window.get_window_stats(limit, "user:a", "route")
    assert stats.remaining == 0 and stats.reset_time > 0


def test_remaining_counts_this_processes_unused_hits_as_the_callers() -> None:
    storage = CountingStorage()
    window = FixedWindow(storage, batch_max=64)
    limit = parse("10000/minute")
    for served in range(1, 400):
        assert window.hit(limit, "user:a", "route")
        assert window.get_window_stats(limit, "user:a", "route").remaining == 10000 - served
    assert storage.increments < 100


def test_a_new_window_asks_the_storage_again_and_forget_drops_the_batches() -> None:
    storage = CountingStorage()
    window = FixedWindow(storage, batch_max=64)
    limit = parse("100000/minute")
    _admitted(window, limit, 500)
    storage.reset()  # the window's counts are gone (as at a window's end, or a storage reset)
    window.forget()
    before = storage.increments
    assert window.hit(limit, "user:a", "route")
    assert storage.increments == before + 1, "a fresh window starts with one hit per call"
    assert storage.get(limit.key_for("user:a", "route")) == 1
