"""Who a replica runs as: the image's configured user, the agent's `run_as_user`, and the default.

One table for the rule (`runner.users.effective_user`), which both backends use; the engine proofs that a
container really runs as that user are in tests/integration (`test_docker_runner`, `test_swarm_runner`).
"""

from __future__ import annotations

import pytest

from deploy_service.runner.errors import RunnerConfigError
from deploy_service.runner.settings import RunnerSettings
from deploy_service.runner.users import RUN_AS_USER, check_default_user, effective_user, numeric_user

DEFAULT = "65532:65532"


@pytest.mark.parametrize(
    ("image_user", "expected"),
    [
        # Root, however it is written: never kept.
        (None, DEFAULT),
        ("", DEFAULT),
        ("   ", DEFAULT),
        ("root", DEFAULT),
        ("root:root", DEFAULT),
        ("0", DEFAULT),
        ("0:0", DEFAULT),
        ("0:1000", DEFAULT),
        ("00", DEFAULT),
        ("000:0", DEFAULT),
        ("+0", DEFAULT),
        ("-0", DEFAULT),
        (" 0", DEFAULT),
        ("0 ", DEFAULT),
        ("0_0", DEFAULT),
        ("\u0660", DEFAULT),  # an Arabic-Indic zero: str.isdigit() and int() take it
        # A name may be uid 0 in the image's own /etc/passwd: never kept.
        ("nobody", DEFAULT),
        ("toor", DEFAULT),
        ("app:app", DEFAULT),
        ("1000:staff", DEFAULT),
        ("app:1000", DEFAULT),
        # Numbers that are not written canonically, or are out of the engine's range.
        ("01000", DEFAULT),
        ("+1000", DEFAULT),
        ("1_000", DEFAULT),
        ("1000:", DEFAULT),
        (":1000", DEFAULT),
        ("1000:1000:1000", DEFAULT),
        ("1000:+0", DEFAULT),
        ("1000:00", DEFAULT),
        ("2147483648", DEFAULT),
        ("4294967296", DEFAULT),
        ("1000:2147483648", DEFAULT),
        # A numeric non-zero user is the image's choice, and kept.
        ("1", "1"),
        ("1000", "1000"),
        ("1000:1000", "1000:1000"),
        ("1000:0", "1000:0"),
        ("65534:65534", "65534:65534"),
        ("2147483647:2147483647", "2147483647:2147483647"),
    ],
)
def test_the_image_user_is_kept_only_when_it_is_a_non_zero_number(image_user: str | None, expected: str) -> None:
    assert effective_user(image_user, run_as_user=None, default=DEFAULT) == expected


@pytest.mark.parametrize("image_user", [None, "", "root", "0", "toor", "1000:1000"])
def test_the_agents_run_as_user_wins_over_any_image_user(image_user: str | None) -> None:
    assert effective_user(image_user, run_as_user="4242:4343", default=DEFAULT) == "4242:4343"
    assert effective_user(image_user, run_as_user="4242", default=DEFAULT) == "4242"


@pytest.mark.parametrize("run_as_user", ["0", "0:0", "root", "00", "+0", "", "1000:staff", "2147483648"])
def test_a_run_as_user_that_is_not_a_non_zero_number_never_reaches_the_engine(run_as_user: str) -> None:
    """The schema refuses these; a stored config that holds one anyway gets the default, never root."""
    assert effective_user("root", run_as_user=run_as_user, default=DEFAULT) == DEFAULT
    assert effective_user("1000", run_as_user=run_as_user, default=DEFAULT) == "1000"


def test_the_documented_pattern_is_the_rule() -> None:
    """The spec's pattern for `run_as_user` accepts exactly what `numeric_user` accepts."""
    samples = ["1", "9", "10", "999999999", "1000000000", "2147483647", "2147483648", "2147483650", "2200000000"]
    samples += ["3000000000", "9999999999", "0", "00", "01", "1:0", "1:00", "1:2147483647", "1:2147483648"]
    samples += ["2147483639", "2147483640", "2147483646", "2147483657", "2147483700", "2147484000", "2147490000"]
    samples += ["2147500000", "2148000000", "2150000000", "2100000000", "2000000000", "1999999999", "1000:1000"]
    for value in samples:
        assert (RUN_AS_USER.fullmatch(value) is not None) is (numeric_user(value) is not None), value
    for uid in range(2147483600, 2147483700):
        assert (RUN_AS_USER.fullmatch(str(uid)) is not None) is (uid <= 2147483647), uid


def test_the_default_user_is_never_root() -> None:
    check_default_user(RunnerSettings())
    assert RunnerSettings().default_user == DEFAULT
    for uid, gid in [(0, 65532), (-1, 0), (65532, -1), (2147483648, 0)]:
        with pytest.raises(RunnerConfigError):
            check_default_user(RunnerSettings(default_uid=uid, default_gid=gid))
    check_default_user(RunnerSettings(default_uid=1, default_gid=0))
