"""deployctl login, logout, whoami, contexts and credentials, against the app in-process."""

from __future__ import annotations

import json
import stat

from flask import Flask

from tests.cli.conftest import URL, Cli
from tests.factories import UserRef


def _stored(cli: Cli) -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads((cli.config / "deployctl" / "credentials.json").read_text())
    return data


def test_login_keeps_the_tokens_in_a_0600_file_and_never_prints_them(cli: Cli, user: UserRef) -> None:
    result = cli.ok("login", "--email", user.email, "-o", "json", DEPLOYCTL_PASSWORD=user.password)
    assert json.loads(result.stdout)["email"] == user.email
    assert f"Logged in to {URL} as {user.email}" in result.stderr
    path = cli.config / "deployctl" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = _stored(cli)[URL]
    assert stored["refresh_token"] and stored["access_token"] and stored["email"] == user.email
    for token in (stored["access_token"], stored["refresh_token"]):
        assert token not in result.stdout and token not in result.stderr
    assert cli.json("whoami")["id"] == user.id


def test_login_prompts_on_stderr_when_no_password_is_in_the_environment(cli: Cli, user: UserRef) -> None:
    result = cli.ok("login", "--email", user.email, "-o", "json", input=user.password + "\n")
    assert "Password" in result.stderr and user.password not in result.stdout + result.stderr
    assert json.loads(result.stdout)["id"] == user.id


def test_a_wrong_password_is_exit_1_with_the_services_message_and_no_traceback(cli: Cli, user: UserRef) -> None:
    result = cli("login", "--email", user.email, DEPLOYCTL_PASSWORD="not-the-password")
    assert result.exit_code == 1
    assert "unauthorized" in result.stderr and "HTTP 401" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (cli.config / "deployctl" / "credentials.json").exists()


def test_without_a_login_a_command_says_how_to_log_in(cli: Cli) -> None:
    result = cli("whoami")
    assert result.exit_code == 1 and "deployctl login" in result.stderr and "DEPLOYCTL_TOKEN" in result.stderr


def test_bad_usage_is_exit_2(logged_in: Cli) -> None:
    assert logged_in("whoami", "--no-such-flag").exit_code == 2
    assert logged_in("scale").exit_code == 2
    assert logged_in("apply", "-f", "x.yaml", "--set", "NOEQUALS").exit_code == 2


def test_an_expired_access_token_is_renewed_once_from_the_refresh_token(logged_in: Cli, user: UserRef) -> None:
    path = logged_in.config / "deployctl" / "credentials.json"
    data = _stored(logged_in)
    data[URL]["access_token"] = "not-a-valid-token"
    path.write_text(json.dumps(data))
    assert logged_in.json("whoami")["id"] == user.id
    renewed = _stored(logged_in)[URL]["access_token"]
    assert renewed != "not-a-valid-token"
    assert logged_in.json("whoami")["id"] == user.id and _stored(logged_in)[URL]["access_token"] == renewed


def test_logout_ends_the_session_on_the_service_and_forgets_it(logged_in: Cli, app: Flask) -> None:
    tokens = _stored(logged_in)[URL]
    result = logged_in.ok("logout")
    assert "Logged out" in result.stderr
    assert URL not in _stored(logged_in)
    assert logged_in("whoami").exit_code == 1
    # the tokens no longer work anywhere (the service revoked the session)
    client = app.test_client()
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 401
    refreshed = client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    assert refreshed.status_code == 401
    assert "Not logged in" in logged_in.ok("logout").stderr


def test_a_token_from_the_environment_is_used_and_never_stored(cli: Cli, app: Flask, user: UserRef) -> None:
    login = app.test_client().post("/v1/auth/login", json={"email": user.email, "password": user.password})
    token = login.get_json()["access_token"]
    assert cli.json("whoami", DEPLOYCTL_TOKEN=token)["email"] == user.email
    assert not (cli.config / "deployctl" / "credentials.json").exists()
    result = cli("whoami", DEPLOYCTL_TOKEN="garbage")
    assert result.exit_code == 1 and "garbage" not in result.stderr


def test_contexts_pick_the_url_and_each_url_keeps_its_own_login(cli: Cli, user: UserRef) -> None:
    env = {"DEPLOYCTL_URL": ""}  # no override: the context decides
    cli.ok("context", "add", "local", URL, "--use", **env)
    cli.ok("context", "add", "staging", "https://staging.example.com/", **env)
    cli.ok("login", "--email", user.email, DEPLOYCTL_PASSWORD=user.password, **env)
    listed = {c["name"]: c for c in cli.json("context", "ls", **env)}
    assert listed["local"] == {"name": "local", "url": URL, "current": True, "email": user.email}
    assert listed["staging"]["url"] == "https://staging.example.com" and listed["staging"]["email"] is None
    assert cli.json("whoami", **env)["id"] == user.id
    # the login of one service is never sent to another: staging has none
    refused = cli("--context", "staging", "whoami", **env)
    assert refused.exit_code == 1 and "Not logged in to https://staging.example.com" in refused.stderr
    cli.ok("context", "use", "staging", **env)
    assert cli("whoami", **env).exit_code == 1
    assert cli.json("--url", URL, "whoami", **env)["id"] == user.id  # --url overrides the context
    unknown = cli("context", "use", "nope", **env)
    assert unknown.exit_code == 1 and "No context named 'nope'" in unknown.stderr
    table = cli.ok("context", "ls", "-o", "table", **env).stdout
    assert "staging" in table and "local" in table and user.email in table


def test_tokens_create_ls_revoke(logged_in: Cli, app: Flask) -> None:
    created = logged_in.ok("tokens", "create", "ci", "--scope", "read", "--scope", "deploy", "-o", "json")
    token = json.loads(created.stdout)
    assert token["key"].startswith("dsp_") and sorted(token["scopes"]) == ["deploy", "read"] and token["name"] == "ci"
    assert "not shown again" in created.stderr and token["key"] not in created.stderr
    listed = logged_in.json("tokens", "ls")
    assert [t["id"] for t in listed] == [token["id"]] and "key" not in listed[0]
    assert token["key"] not in logged_in.ok("tokens", "ls", "-o", "table").stdout
    me = logged_in.json("whoami", DEPLOYCTL_TOKEN=token["key"], XDG_CONFIG_HOME=str(logged_in.config / "empty"))
    assert me["email"]
    refused = logged_in("tokens", "create", "more", DEPLOYCTL_TOKEN=token["key"])
    assert refused.exit_code == 1 and "HTTP 403" in refused.stderr, "a token never mints another"
    logged_in.ok("tokens", "revoke", "ci")
    assert logged_in.json("tokens", "ls")[0]["revoked_at"] is not None
    gone = logged_in("whoami", DEPLOYCTL_TOKEN=token["key"], XDG_CONFIG_HOME=str(logged_in.config / "empty"))
    assert gone.exit_code == 1 and "HTTP 401" in gone.stderr
    again = logged_in("tokens", "revoke", "ci")
    assert again.exit_code == 1 and "still works" in again.stderr
