"""Authentication: every protected route refuses a missing, forged, expired, misused or revoked credential.

Tokens are forged with PyJWT. A control case, forged by the same helper with the right key and every
claim intact, is accepted — so each refusal below is due to the one thing the case breaks.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest

from deploy_service.extensions import db
from deploy_service.models import ApiKey, User
from deploy_service.models.types import utcnow
from deploy_service.security import generate_api_key
from tests.helpers import assert_error
from tests.security.conftest import World, arranged_ids, missing_ids
from tests.security.routes import ACCESS_ROUTES, KEY_ROUTES, OPERATOR_ONLY, PROTECTED, REFRESH, Probe, ids

REFRESH_PROBE = next(p for p in PROTECTED if p.access == REFRESH)


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _key(world: World) -> str:
    return str(world.app.config["JWT_SECRET_KEY"])


def _forge(world: World, claims: dict[str, Any], *, key: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, _key(world) if key is None else key, algorithm=algorithm)


def _without(claims: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k != name}


def _tampered(token: str, **changes: Any) -> str:
    """The token with its payload edited and the original signature kept."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{edited}.{signature}"


def _deactivate(world: World) -> None:
    with world.app.app_context():
        db.session.get(User, world.victim.user.id).is_active = False
        db.session.commit()


# Each case: (world, a fresh login of the victim) → the Authorization header value.
Case = Callable[[World, dict[str, Any]], str]
ACCESS_CASES: dict[str, Case] = {
    "alg_none": lambda w, t: jwt.encode(_claims(t["access_token"]), None, algorithm="none"),
    "alg_none_unsigned_header_only": lambda w, t: t["access_token"].rsplit(".", 1)[0] + ".",
    "wrong_key": lambda w, t: _forge(w, _claims(t["access_token"]), key="not-the-key-" + "x" * 40),
    "right_key_other_algorithm": lambda w, t: _forge(w, _claims(t["access_token"]), algorithm="HS512"),
    "no_exp": lambda w, t: _forge(w, _without(_claims(t["access_token"]), "exp")),
    "expired": lambda w, t: _forge(w, {**_claims(t["access_token"]), "exp": int(time.time()) - 5}),
    "not_yet_valid": lambda w, t: _forge(w, {**_claims(t["access_token"]), "nbf": int(time.time()) + 3600}),
    "no_session": lambda w, t: _forge(w, _without(_claims(t["access_token"]), "sid")),
    "unknown_session": lambda w, t: _forge(w, {**_claims(t["access_token"]), "sid": str(uuid.uuid4())}),
    "another_users_session": lambda w, t: _forge(
        w, {**_claims(t["access_token"]), "sid": _claims(w.auth.login(w.stranger)["access_token"])["sid"]}
    ),
    "payload_edited_signature_kept": lambda w, t: _tampered(t["access_token"], sub=w.stranger.id),
    "refresh_token_as_access": lambda w, t: t["refresh_token"],
    "garbage": lambda w, t: "abc.def.ghi",
    "not_a_jwt": lambda w, t: "hello",
    "empty": lambda w, t: "",
}
SCHEMES: dict[str, Callable[[str], str]] = {
    "bearer": lambda token: f"Bearer {token}",
    "token_scheme": lambda token: f"Token {token}",
    "basic_scheme": lambda token: "Basic " + base64.b64encode(b"victim:password").decode(),
    "no_scheme": lambda token: token,
    "no_space": lambda token: f"Bearer{token}",
}


def _refused_everywhere(
    world: World, probes: tuple[Probe, ...], headers: dict[str, str], *, unchanged: bool = True
) -> None:
    """Every probe answers 401 with the contract body, and (when the victim can still look) changed nothing."""
    before = world.victim.snapshot() if unchanged else None
    for probe in probes:
        response = world.request(probe, world.victim.ids, headers)
        assert_error(response, 401, "unauthorized")
        response.close()
    if unchanged:
        assert world.victim.snapshot() == before


@pytest.mark.parametrize("probe", PROTECTED, ids=ids(PROTECTED))
def test_no_credentials_is_401(world: World, probe: Probe) -> None:
    assert_error(world.request(probe, world.victim.ids), 401, "unauthorized")


@pytest.mark.parametrize("case", sorted(ACCESS_CASES))
def test_bad_access_token_is_401_on_every_route(world: World, case: str) -> None:
    token = ACCESS_CASES[case](world, world.auth.login(world.victim.user))
    _refused_everywhere(world, ACCESS_ROUTES, {"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("scheme", sorted(set(SCHEMES) - {"bearer"}))
def test_a_good_token_in_the_wrong_scheme_is_401_on_every_route(world: World, scheme: str) -> None:
    token = world.auth.login(world.victim.user)["access_token"]
    _refused_everywhere(world, ACCESS_ROUTES, {"Authorization": SCHEMES[scheme](token)})


def test_the_forging_helper_makes_tokens_that_work(world: World) -> None:
    """The control: right key, right algorithm, every claim — accepted; so each case above fails for its reason."""
    login = world.auth.login(world.victim.user)
    forged = _forge(world, _claims(login["access_token"]))
    me = world.client.get("/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert me.status_code == 200 and me.get_json()["id"] == world.victim.user.id
    refreshed = _forge(world, _claims(login["refresh_token"]))
    assert world.client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {refreshed}"}).status_code == 200


def test_logged_out_access_and_refresh_tokens_are_401_everywhere(world: World) -> None:
    login = world.auth.login(world.victim.user)
    access, refresh = {"Authorization": f"Bearer {login['access_token']}"}, login["refresh_token"]
    new_access = world.client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {refresh}"})
    assert new_access.status_code == 200
    assert world.client.post("/v1/auth/logout", headers=access).status_code == 200
    _refused_everywhere(world, ACCESS_ROUTES, access)
    _refused_everywhere(world, ACCESS_ROUTES, {"Authorization": f"Bearer {new_access.get_json()['access_token']}"})
    _refused_everywhere(world, (REFRESH_PROBE,), {"Authorization": f"Bearer {refresh}"})
    other_login = world.client.get("/v1/auth/me", headers=world.victim.headers)
    assert other_login.status_code == 200, "logging out one session must not end the user's other sessions"


@pytest.mark.parametrize(
    "case", ["access_token_as_refresh", "alg_none", "wrong_key", "expired", "no_exp", "garbage", "unknown_session"]
)
def test_bad_refresh_token_is_401(world: World, case: str) -> None:
    login = world.auth.login(world.victim.user)
    claims = _claims(login["refresh_token"])
    token = {
        "access_token_as_refresh": login["access_token"],
        "alg_none": jwt.encode(claims, None, algorithm="none"),
        "wrong_key": _forge(world, claims, key="not-the-key-" + "x" * 40),
        "expired": _forge(world, {**claims, "exp": int(time.time()) - 5}),
        "no_exp": _forge(world, _without(claims, "exp")),
        "garbage": "abc.def.ghi",
        "unknown_session": _forge(world, {**claims, "sid": str(uuid.uuid4())}),
    }[case]
    _refused_everywhere(world, (REFRESH_PROBE,), {"Authorization": f"Bearer {token}"})


def test_a_deactivated_users_tokens_stop_working(world: World) -> None:
    login = world.auth.login(world.victim.user)
    _deactivate(world)
    access, refresh = login["access_token"], login["refresh_token"]
    _refused_everywhere(world, ACCESS_ROUTES, {"Authorization": f"Bearer {access}"}, unchanged=False)
    _refused_everywhere(world, (REFRESH_PROBE,), {"Authorization": f"Bearer {refresh}"}, unchanged=False)
    assert_error(
        world.client.post(
            "/v1/auth/login", json={"email": world.victim.user.email, "password": world.victim.user.password}
        ),
        401,
        "unauthorized",
    )


# API keys --------------------------------------------------------------------------------------------


def _key_headers(world: World, agent: str = "agent_id") -> dict[str, str]:
    agent_id = world.victim.ids[agent] if agent == "agent_id" else world.victim.second["agent_id"]
    return {"X-API-Key": world.victim.keys[agent_id]}


@pytest.mark.parametrize("probe", KEY_ROUTES, ids=ids(KEY_ROUTES))
def test_a_live_key_works_for_its_own_agent(world: World, probe: Probe) -> None:
    """The control of the key cases: the victim's own key on its own agent is not refused."""
    response = world.request(probe, arranged_ids(world, probe), _key_headers(world))
    assert response.status_code == probe.ok, response.get_json()


@pytest.mark.parametrize("probe", OPERATOR_ONLY, ids=ids(OPERATOR_ONLY))
def test_a_key_on_an_operator_route_is_403(world: World, probe: Probe) -> None:
    before = world.victim.snapshot()
    assert_error(world.request(probe, world.victim.ids, _key_headers(world)), 403, "forbidden")
    assert world.victim.snapshot() == before


NAMING_KEY_ROUTES = tuple(probe for probe in KEY_ROUTES if probe.other is not None)


@pytest.mark.parametrize("probe", NAMING_KEY_ROUTES, ids=ids(NAMING_KEY_ROUTES))
def test_a_key_of_one_agent_on_another_agent_is_404_as_if_missing(world: World, probe: Probe) -> None:
    before = world.victim.snapshot()
    headers = _key_headers(world)
    other_agent = {**world.victim.ids, **world.victim.second}
    response = world.request(probe, other_agent, headers)
    body = assert_error(response, 404, "not_found")
    missing = world.request(probe, {**world.victim.ids, **missing_ids(probe)}, headers)
    assert missing.get_json() == body
    assert world.victim.snapshot() == before


@pytest.mark.parametrize("probe", KEY_ROUTES, ids=ids(KEY_ROUTES))
def test_a_key_without_the_routes_scope_is_403(world: World, probe: Probe) -> None:
    headers = {"Authorization": world.victim.headers["Authorization"]}
    other_scopes = sorted({"invoke", "telemetry", "results"} - {probe.key_scope})
    created = world.client.post(
        f"/v1/agents/{world.victim.ids['agent_id']}/api-key", headers=headers, json={"scopes": other_scopes}
    )
    assert created.status_code == 201
    response = world.request(probe, world.victim.ids, {"X-API-Key": created.get_json()["key"]})
    assert_error(response, 403, "forbidden")


def _revoke(world: World) -> None:
    victim = world.victim
    url = f"/v1/agents/{victim.ids['agent_id']}/api-keys/{victim.ids['key_id']}"
    assert world.client.delete(url, headers=victim.headers).status_code == 200


def _expire(world: World) -> None:
    with world.app.app_context():
        db.session.get(ApiKey, world.victim.ids["key_id"]).expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_revoked_or_expired_key_is_401_on_every_key_route(world: World, how: str) -> None:
    {"revoked": _revoke, "expired": _expire}[how](world)
    _refused_everywhere(world, KEY_ROUTES, _key_headers(world))


@pytest.mark.parametrize(
    "presented",
    ["checksum_typo", "unknown_but_well_formed", "garbage", "empty", "padded", "bearer_style"],
)
def test_a_malformed_or_unknown_key_is_401_on_every_key_route(world: World, presented: str) -> None:
    key = world.victim.keys[world.victim.ids["agent_id"]]
    value = {
        "checksum_typo": key[:-1] + ("0" if key[-1] != "0" else "1"),
        "unknown_but_well_formed": generate_api_key(),
        "garbage": "'; DROP TABLE api_keys; --",
        "empty": "",
        "padded": f" {key}x",
        "bearer_style": f"Bearer {key}",
    }[presented]
    _refused_everywhere(world, KEY_ROUTES, {"X-API-Key": value})
