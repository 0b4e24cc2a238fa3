"""An outage of one part of the loop: backoff doubling up to its cap, and one log line at each end."""

from __future__ import annotations

import logging

import pytest

from deploy_service.reconciler.outage import Outage


def test_the_wait_doubles_per_failure_up_to_the_cap_and_resets_after_a_success() -> None:
    outage = Outage("leadership", base=0.5, maximum=3.0)
    assert [outage.failed(OSError("away")) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    outage.recovered()
    assert outage.failures == 0
    assert outage.failed(OSError("away again")) == 0.5
    assert outage.outages == 2


def test_one_warning_when_it_starts_and_one_info_with_its_length_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = Outage("wake-ups", base=1.0, maximum=1.0, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="deploy_service.reconciler")
    for _ in range(4):
        outage.failed(ConnectionRefusedError("refused"))
        now[0] += 2.5
    outage.recovered()
    outage.recovered()
    above_debug = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno > logging.DEBUG]
    assert above_debug == [
        (
            "WARNING",
            "reconciler: wake-ups failed (ConnectionRefusedError: refused); retrying with backoff until it recovers",
        ),
        ("INFO", "reconciler: wake-ups recovered after 4 failed attempt(s) in 10.0 s"),
    ]
