"""The client's pure parts: the event-stream parser, the error body → exception mapping, the spec diff."""

from __future__ import annotations

import pytest

from deploy_client import errors, specs, sse


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
