"""Tenancy: a stranger naming another user's resources learns nothing and changes nothing.

For every probe that names the victim's resources (in the path, the body or a query filter), the
stranger gets exactly the answer a made-up id gets — same status, same body — so there is no
existence oracle; the victim's state is unchanged afterwards; and the victim itself, sending the same
request (with the state arranged that the request needs), gets the route's success status
(`Probe.ok`), which shows the stranger's refusal comes from ownership and not from a broken route.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import assert_error
from tests.security.conftest import World, arranged_ids, missing_ids
from tests.security.routes import EMPTY, FORBIDDEN, NOT_FOUND, OWNED, Probe, ids

EXPECTED = {NOT_FOUND: (404, "not_found"), FORBIDDEN: (403, "forbidden")}


def _answer(world: World, probe: Probe, ids_: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
    response = world.request(probe, ids_, headers)
    try:
        return response.status_code, response.get_json(silent=True)
    finally:
        response.close()


@pytest.mark.parametrize("probe", OWNED, ids=ids(OWNED))
def test_another_users_resource_is_answered_as_a_missing_one(world: World, probe: Probe) -> None:
    victim = world.victim
    before = victim.snapshot()
    others = _answer(world, probe, victim.ids, world.stranger_headers)
    missing = _answer(world, probe, {**victim.ids, **missing_ids(probe)}, world.stranger_headers)
    assert others == missing, "the answer differs between another user's id and a missing one"
    if probe.other == EMPTY:
        status, body = others
        assert status == 200 and body["items"] == [] and body["total"] == 0, body
    else:
        response = world.request(probe, victim.ids, world.stranger_headers)
        assert_error(response, *EXPECTED[probe.other])
    assert victim.snapshot() == before, "a stranger's request changed the victim's resources"

    status, body = _answer(world, probe, arranged_ids(world, probe), world.headers_for(probe))
    assert status == probe.ok, (status, body)
    if probe.other == EMPTY:
        assert body["total"] >= 1, body


@pytest.mark.parametrize("probe", OWNED, ids=ids(OWNED))
def test_a_stranger_with_an_api_key_of_its_own_is_refused_too(world: World, probe: Probe) -> None:
    """The stranger's own agent key opens nothing of the victim's: 403 on operator routes, 404 on key routes."""
    from tests.factories import make_agent

    agent = make_agent(world.app, world.stranger)
    created = world.client.post(f"/v1/agents/{agent['id']}/api-key", headers=world.stranger_headers, json={})
    key_headers = {"X-API-Key": created.get_json()["key"]}
    before = world.victim.snapshot()
    response = world.request(probe, world.victim.ids, key_headers)
    if probe.key_scope is None:
        assert_error(response, 403, "forbidden")
    else:
        assert_error(response, 404, "not_found")
    assert world.victim.snapshot() == before
