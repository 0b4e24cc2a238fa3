"""The state machine's table and action rules, and the reconciler's timing rules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from deploy_service.errors import InvalidState
from deploy_service.models import Deployment
from deploy_service.models import DeploymentStatus as S
from deploy_service.reconciler.timing import restart_delay
from deploy_service.services import lifecycle
from deploy_service.settings import Settings


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        (S.DEPLOYING, S.RUNNING, True),
        (S.DEPLOYING, S.FAILED, True),
        (S.RUNNING, S.READY, True),
        (S.READY, S.RUNNING, True),
        (S.STOPPED, S.DEPLOYING, True),
        (S.FAILED, S.DEPLOYING, True),
        (S.KILLED, S.DEPLOYING, False),
        (S.KILLED, S.RUNNING, False),
        (S.STOPPED, S.READY, False),
        (S.FAILED, S.READY, False),
        (S.READY, S.DEPLOYING, False),
    ],
)
def test_transition_table(old: str, new: str, allowed: bool) -> None:
    assert lifecycle.can_transition(old, new) is allowed


def test_every_live_status_can_be_killed_and_killed_is_terminal() -> None:
    for status in lifecycle.LIVE_STATUSES:
        assert lifecycle.can_transition(status, S.KILLED)
    assert lifecycle.TRANSITIONS[S.KILLED] == frozenset()
    assert set(lifecycle.TRANSITIONS) == set(lifecycle.STATUSES)


def _deployment(status: str) -> Deployment:
    return Deployment(status=status)


@pytest.mark.parametrize(
    ("status", "mode"),
    [(S.RUNNING, "rolling"), (S.READY, "rolling"), (S.STOPPED, "start"), (S.FAILED, "start")],
)
def test_restart_modes(status: str, mode: str) -> None:
    assert lifecycle.check_restart(_deployment(status)) == mode


@pytest.mark.parametrize("status", [S.DEPLOYING, S.KILLED])
def test_restart_refused_with_409(status: str) -> None:
    with pytest.raises(InvalidState) as caught:
        lifecycle.check_restart(_deployment(status))
    assert caught.value.status_code == 409


@pytest.mark.parametrize("status", [S.DEPLOYING, S.STOPPED, S.FAILED, S.KILLED])
def test_scale_refused_with_400_and_contract_message(status: str) -> None:
    with pytest.raises(InvalidState) as caught:
        lifecycle.check_scale(_deployment(status))
    assert caught.value.status_code == 400
    assert caught.value.message == "Can only scale running deployments"
    assert caught.value.kind == "invalid_state"


def test_stop_refused_only_when_killed() -> None:
    for status in lifecycle.LIVE_STATUSES:
        lifecycle.check_stop(_deployment(status))
    with pytest.raises(InvalidState):
        lifecycle.check_stop(_deployment(S.KILLED))


def test_restart_backoff_doubles_and_caps() -> None:
    delays = [restart_delay(n, base=1.0, maximum=10.0) for n in range(0, 7)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_stored_text_is_one_line_of_at_most_the_limit(app: Flask, configure: Callable[..., Settings]) -> None:
    stored_text = lifecycle.stored_text
    with app.app_context():
        assert stored_text("pull failed:\r\n\x1b[31mdenied\x1b[0m\t ok ") == "pull failed: [31mdenied [0m ok"
        cut = stored_text("y" * 10_000)
        assert len(cut) == 500 and cut.endswith("…")  # STORED_TEXT_MAX_CHARS's default
        assert stored_text("short") == "short"
    configure(STORED_TEXT_MAX_CHARS=100)
    with app.app_context():
        assert len(stored_text("y" * 10_000)) == 100
