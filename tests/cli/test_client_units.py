"""The client's pure parts: the event-stream parser, the error body → exception mapping, the spec diff, the
progress line."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from deploy_client import errors, specs, sse
from deploy_client.cli.output import ProgressLine


def test_sse_events_come_one_by_one_with_comments_skipped() -> None:
    lines = [": following", "", 'data: {"line": "a"}', "", "event: end", 'data: {"status": "killed"}', "", "data: x"]
    events = list(sse.parse(iter(lines)))
    assert events == [
        sse.Event(None, {"line": "a"}),
        sse.Event("end", {"status": "killed"}),
        sse.Event(None, "x"),
    ]


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"success": False, "error": "validation_error", "message": "m", "details": {"port": ["bad"]}},
         errors.ValidationFailed),
        (400, {"success": False, "error": "invalid_state", "message": "m"}, errors.InvalidState),
        (403, {"success": False, "error": "quota_exceeded", "message": "m"}, errors.Forbidden),
        (409, {"success": False, "error": "conflict", "message": "m"}, errors.Conflict),
        (503, {"success": False, "error": "no_ready_replica", "message": "m"}, errors.Unavailable),
        (500, {"success": False, "error": "internal_error", "message": "m"}, errors.ServerError),
        (502, "<html>proxy</html>", errors.Unavailable),
        (418, None, errors.ApiError),
    ],
)  # fmt: skip
def test_each_error_family_is_its_own_class(status: int, body: object, kind: type[errors.ApiError]) -> None:
    error = errors.error_from(status, body)
    assert type(error) is kind and error.status == status
    if isinstance(body, dict):
        assert error.code == body["error"] and error.message == "m"
        assert error.details == body.get("details", {})


def test_rate_limited_keeps_retry_after() -> None:
    error = errors.error_from(429, {"success": False, "error": "rate_limited", "message": "slow"}, retry_after="7")
    assert isinstance(error, errors.RateLimited) and error.retry_after == 7.0


def test_changes_compare_nested_objects_on_the_keys_the_spec_gives() -> None:
    agent = {"image": "a:1", "resources": {"cpu": 0.5, "memory_mb": 256}, "env": {}, "source": None, "port": 8080}
    assert specs.changes({"name": "x", "image": "a:1", "resources": {"memory_mb": 256}}, agent) == {}
    assert specs.changes({"name": "x", "resources": {"memory_mb": 128}}, agent) == {"resources": {"memory_mb": 128}}
    assert specs.changes({"name": "x", "env": {}}, agent) == {}
    assert specs.changes({"name": "x", "source": {"git_url": "https://g/x.git"}}, agent) == {
        "source": {"git_url": "https://g/x.git"},
        "image": None,
    }


def test_the_progress_line_is_rewritten_in_place_on_a_terminal_and_one_per_change_elsewhere() -> None:
    terminal = io.StringIO()
    line = ProgressLine(Console(file=terminal, force_terminal=True, width=100))
    for text in ("deploying · 0/2 ready", "deploying · 0/2 ready", "deploying · 1/2 ready", "ready · 2/2 ready"):
        line.show(text)
    line.close()
    shown = terminal.getvalue()
    assert "\r" in shown or "\x1b[" in shown, "the line is redrawn, not appended"
    assert shown.rstrip().endswith("ready · 2/2 ready"), "the last state stays on screen"
    assert shown.count("\n") <= 2

    log = io.StringIO()
    plain = ProgressLine(Console(file=log, force_terminal=False, width=100))
    for text in ("deploying · 0/2 ready", "deploying · 0/2 ready", "ready · 2/2 ready"):
        plain.show(text)
    plain.close()
    assert log.getvalue() == "deploying · 0/2 ready\nready · 2/2 ready\n"
