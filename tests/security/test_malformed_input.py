"""Malformed input is a 4xx, never a 500, on SQLite and on PostgreSQL.

Each input here once reached code that could not take it: JSON nested 100 000 levels deep (Python's
parser recursion), integers longer than Python converts, `NaN` and `1e999` (not JSON; PostgreSQL's
JSONB refuses them), lone surrogates (no driver encodes them), NUL characters in path ids and query
arguments (PostgreSQL refuses NUL in text), a time past the year 9999 once converted to UTC, and names
with a trailing newline (a `re.match` with `$` accepts one). Each is refused at the edge, before any
row is read or written.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.helpers import assert_error
from tests.security.conftest import World
from tests.security.routes import PROBES, PUBLIC, Probe

BODY_PROBES = tuple(probe for probe in PROBES if probe.body is not None)


def _headers(world: World, probe: Probe) -> dict[str, str]:
    if probe.key_scope == "invoke":
        return {"X-API-Key": world.victim.keys[world.victim.ids["agent_id"]]}
    return world.headers_for(probe)


def _post_raw(world: World, probe: Probe, raw: bytes) -> Any:
    url, _ = probe.render(world.victim.ids)
    return world.client.open(
        url, method=probe.method, headers=_headers(world, probe), data=raw, content_type="application/json"
    )


# Bodies ----------------------------------------------------------------------------------------------

HOSTILE_BODIES = {
    "100k nested arrays": b"[" * 100_000,
    "100k nested objects": b'{"a":' * 100_000,
    "a 5000-digit integer": b'{"replicas": ' + b"9" * 5000 + b"}",
    "NaN": b'{"replicas": NaN}',
    "Infinity": b'{"results": {"a": -Infinity}}',
    "1e999": b'{"results": {"a": 1e999}}',
    "invalid UTF-8": b'{"name": "\xff\xfe"}',
}


@pytest.mark.parametrize("label", HOSTILE_BODIES)
@pytest.mark.parametrize("probe", BODY_PROBES, ids=[probe.id for probe in BODY_PROBES])
def test_a_body_that_is_not_json_the_service_takes_is_400(world: World, probe: Probe, label: str) -> None:
    before = world.victim.snapshot()
    error = assert_error(_post_raw(world, probe, HOSTILE_BODIES[label]), 400, "validation_error")
    assert list(error["details"]) == ["json"], error
    assert world.victim.snapshot() == before


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


def test_nesting_is_limited_by_max_json_depth(world: World, configure: Any) -> None:
    configure(MAX_JSON_DEPTH=6)
    url = f"/v1/deployments/{world.victim.ids['deployment_id']}/results"
    key = {"X-API-Key": world.victim.keys[world.victim.ids["agent_id"]]}
    # The body is one level, `results` the other five.
    assert world.client.post(url, headers=key, json={"results": _nested(5)}).status_code == 201
    error = assert_error(world.client.post(url, headers=key, json={"results": _nested(6)}), 400, "validation_error")
    assert "more than 6 levels" in error["details"]["json"][0], error


def _fill(body: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    return {name: value.format(**ids) if name == "agent_id" else value for name, value in body.items()}


# (route, body with a lone surrogate somewhere, the field the 400 names)
SURROGATES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/v1/auth/login", {"email": "a\ud800@example.com", "password": "long-enough-pw"}, "email"),
    ("POST", "/v1/auth/register", {"email": "b@example.com", "password": "long-enough-\udfff"}, "password"),
    ("POST", "/v1/agents", {"name": "s", "image": "nginx", "description": "x\ud800"}, "description"),
    ("PATCH", "/v1/agents/{agent_id}", {"description": "\udc00"}, "description"),
    ("POST", "/v1/agents/{agent_id}/api-key", {"name": "k\ud800"}, "name"),
    ("POST", "/v1/deployments", {"agent_id": "\ud800"}, "agent_id"),
    ("POST", "/v1/deployments/{deployment_id}/results", {"results": {"deep": [{"x": "\ud800"}]}}, "results"),
    ("POST", "/v1/evaluations", {"agent_id": "{agent_id}", "prompt": "\ud800", "response": "r"}, "prompt"),
    ("POST", "/v1/secrets", {"name": "n", "value": "v\ud800"}, "value"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), SURROGATES, ids=[f"{m} {p}" for m, p, _, _ in SURROGATES])
def test_a_lone_surrogate_is_400_naming_the_field(
    world: World, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    """`"\\ud800"` is valid JSON but no Unicode text: the database driver could not encode it (a 500)."""
    before = world.victim.snapshot()
    raw = json.dumps(_fill(body, world.victim.ids))  # ensure_ascii: the surrogate goes as `\\ud800`
    response = world.client.open(
        path.format(**world.victim.ids),
        method=method,
        headers=world.victim.headers,
        data=raw,
        content_type="application/json",
    )
    error = assert_error(response, 400, "validation_error")
    assert field in error["details"], error
    assert world.victim.snapshot() == before


# Path ids and query arguments ------------------------------------------------------------------------


def _path_probes() -> list[tuple[Probe, str]]:
    return [
        (probe, name)
        for probe in PROBES
        if probe.access != PUBLIC
        for name in sorted(set(re.findall(r"\{(\w+)\}", probe.path)))
    ]


PATH_IDS = _path_probes()


@pytest.mark.parametrize("bad", ["%00", "a%00b"])
@pytest.mark.parametrize(("probe", "name"), PATH_IDS, ids=[f"{p.id} {n}" for p, n in PATH_IDS])
def test_a_nul_in_a_path_id_is_404(world: World, probe: Probe, name: str, bad: str) -> None:
    """An id with a NUL names nothing; PostgreSQL would refuse the lookup itself (a 500)."""
    url, body = probe.render({**world.victim.ids, name: bad})
    response = world.client.open(url, method=probe.method, headers=_headers(world, probe), json=body)
    assert_error(response, 404, "not_found")


def _query_parameters(world: World) -> list[tuple[str, str, dict[str, str]]]:
    spec = world.client.get("/openapi.json").get_json()
    found = []
    for probe in PROBES:
        if probe.method != "GET" or probe.query or probe.access == PUBLIC:
            continue
        operation = spec["paths"][re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", probe.rule)]["get"]
        url, _ = probe.render(world.victim.ids)
        headers = world.headers_for(probe)
        found += [(url, p["name"], headers) for p in operation.get("parameters", []) if p["in"] == "query"]
    return found


def test_a_nul_in_any_query_argument_is_400_naming_it(world: World) -> None:
    checked = set()
    for url, name, headers in _query_parameters(world):
        for bad in ("%00", "a%00b"):
            response = world.client.get(f"{url}?{name}={bad}", headers=headers)
            error = assert_error(response, 400, "validation_error")
            assert name in error["details"], (url, name, error)
        checked.add((url.split("/v1/")[1].split("/")[0], name))
    assert {("agents", "q"), ("deployments", "agent_id"), ("evaluations", "agent_id"), ("alerts", "deployment_id")} <= (
        checked
    )


@pytest.mark.parametrize("path", ["/v1/evaluations", "/v1/deployments/{deployment_id}/logs"])
def test_a_time_past_the_year_9999_in_utc_is_400(world: World, path: str) -> None:
    url = path.format(**world.victim.ids) + "?since=9999-12-31T23:59:59.999999-23:59"
    error = assert_error(world.client.get(url, headers=world.victim.headers), 400, "validation_error")
    assert "since" in error["details"], error
    fine = path.format(**world.victim.ids) + "?since=9999-12-31T23:59:59%2B01:00"
    assert world.client.get(fine, headers=world.victim.headers).status_code == 200


# Trailing newlines ------------------------------------------------------------------------------------

AGENT = {"name": "nl", "image": "deploy-test/http-agent:latest"}
NEWLINES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/v1/agents", {**AGENT, "env": {"A\n": "x"}}, "env"),
    ("POST", "/v1/agents", {**AGENT, "secrets": {"A\n": "victim-secret"}}, "secrets"),
    ("PATCH", "/v1/agents/{agent_id}", {"env": {"PATH_EXTRA\n": "x"}}, "env"),
    ("POST", "/v1/agents/deploy", {"agent_id": "{agent_id}", "env": {"B\n": "x"}}, "env"),
    ("POST", "/v1/agents", {**AGENT, "name": "nl\n"}, "name"),
    ("POST", "/v1/agents", {**AGENT, "image": "nginx\n"}, "image"),
    ("POST", "/v1/agents", {**AGENT, "invoke_path": "/invoke\n"}, "invoke_path"),
    ("POST", "/v1/secrets", {"name": "secret\n", "value": "v"}, "name"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), NEWLINES, ids=[f"{m} {p} {f}" for m, p, _, f in NEWLINES])
def test_a_name_with_a_trailing_newline_is_400(
    world: World, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    """Every pattern validates the whole string: `re.match` with `$` would accept `"A\\n"`."""
    before = world.victim.snapshot()
    url = path.format(**world.victim.ids)
    response = world.client.open(url, method=method, headers=world.victim.headers, json=_fill(body, world.victim.ids))
    error = assert_error(response, 400, "validation_error")
    assert field in error["details"], error
    assert world.victim.snapshot() == before
