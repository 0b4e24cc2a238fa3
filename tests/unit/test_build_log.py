"""The stored build log's cap (`services.logs.append_build_log`), on a deployment that is never saved."""

from __future__ import annotations

from deploy_service.models import Deployment
from deploy_service.services.logs import append_build_log, build_log_lines


def test_appends_stay_within_the_cap_and_keep_the_newest_whole_lines() -> None:
    deployment = Deployment()
    written: list[str] = []
    for batch in range(30):
        lines = [f"batch {batch:02d} line {n} – ünïcødé ✓" for n in range(7)]  # multi-byte: cuts fall inside
        append_build_log(deployment, lines, max_bytes=1024, line_max_bytes=256)
        written += lines
        stored = deployment.build_log or ""
        assert len(stored.encode()) <= 1024
        kept = [line["line"] for line in build_log_lines(deployment)]
        assert kept and kept == written[-len(kept) :]  # the newest lines, each whole, in order


def test_a_log_under_the_cap_is_kept_whole() -> None:
    deployment = Deployment()
    append_build_log(deployment, ["one", "two  "], max_bytes=1024, line_max_bytes=256)
    append_build_log(deployment, ["three"], max_bytes=1024, line_max_bytes=256)
    assert [line["line"] for line in build_log_lines(deployment)] == ["one", "two", "three"]
