"""Agents as files and as resources: `apply`, `export`, `agents ls|get|rm`, `invoke`, `keys`, `secrets`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from deploy_client import specs
from deploy_client.cli.app import Session, UsageError, app, handled, session
from deploy_client.cli.output import OUTPUT_OPTION, Output, emit, fields_table, rows
from deploy_client.client import Client
from deploy_client.errors import ClientError, NotFound

agents_app = typer.Typer(help="List, show and remove agents.", no_args_is_help=True)
keys_app = typer.Typer(help="An agent's API keys: create (shown once), list, revoke.", no_args_is_help=True)
secrets_app = typer.Typer(help="Stored secrets: set, list (names only), remove.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(keys_app, name="keys")
app.add_typer(secrets_app, name="secrets")

AGENT_FIELDS = (
    "id", "name", "status", "image", "source", "port", "invoke_path", "command", "env", "secrets",
    "health_check", "resources", "created_at", "updated_at",
)  # fmt: skip


@app.command()
@handled
def apply(
    ctx: typer.Context,
    file: Path = typer.Option(..., "-f", "--file", help="A YAML/JSON spec file, or a folder of them."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE for ${KEY} placeholders (else the environment)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; change nothing."),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Create or update agents by name from spec files: each `created`, `updated` (with the fields) or `unchanged`.

    Fields a spec leaves out keep their values. Nothing is deployed: `deployctl deploy` or `restart` does that.
    """
    s = session(ctx)
    try:
        values = specs.parse_sets(set_)
    except ClientError as exc:
        raise UsageError(str(exc)) from None
    loaded = specs.load(file, values, s.runtime.environ)
    client = s.client()
    results: list[dict[str, Any]] = []
    for spec in loaded:
        existing = client.agent_by_name(spec.name)
        if existing is None:
            agent = None if dry_run else client.create_agent(spec.body)
            result: dict[str, Any] = {
                "name": spec.name,
                "action": "created",
                "changed": sorted(k for k in spec.body if k != "name"),
            }
        else:
            patch = specs.changes(spec.body, existing)
            agent = existing
            if patch and not dry_run:
                agent = client.update_agent(existing["id"], patch)
            result = {"name": spec.name, "action": "updated" if patch else "unchanged", "changed": sorted(patch)}
        result["id"] = agent["id"] if agent else None
        result["file"] = str(spec.path)
        results.append(result)
        suffix = f": {', '.join(result['changed'])}" if result["action"] == "updated" else ""
        s.message(f"{spec.name}: {result['action']}{' (dry run)' if dry_run else ''}{suffix}")
    emit(
        s,
        {"dry_run": dry_run, "agents": results},
        output,
        lambda data: rows(
            ("NAME", "ACTION", "CHANGED", "ID"),
            data["agents"],
            lambda r: (r["name"], r["action"], ", ".join(r["changed"]) or "-", r["id"]),
        ),
    )


@app.command()
@handled
def export(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="An agent's name or id."),
    output: Output = typer.Option(Output.yaml, "-o", "--output", help="yaml (default) or json."),
) -> None:
    """The spec `apply` takes for an agent: no ids or status, secrets by name."""
    s = session(ctx)
    spec = specs.export(s.client().find_agent(agent))
    emit(s, spec, Output.json if output == Output.json else Output.yaml)


@agents_app.command("ls")
@handled
def agents_ls(
    ctx: typer.Context,
    q: str | None = typer.Option(None, "--q", "-q", help="Only names containing this."),
    status: str | None = typer.Option(None, "--status", help="idle, deployed or stopped."),
    limit: int = typer.Option(50, "--limit"),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Your agents (an admin's: everyone's)."""
    s = session(ctx)
    page = s.client().list_agents(q=q, status=status, limit=limit)
    emit(
        s,
        page,
        output,
        lambda p: rows(
            ("NAME", "STATUS", "IMAGE / SOURCE", "ID"),
            p["items"],
            lambda a: (a["name"], a["status"], a["image"] or (a["source"] or {}).get("git_url"), a["id"]),
        ),
    )


@agents_app.command("get")
@handled
def agents_get(ctx: typer.Context, agent: str = typer.Argument(...), output: Output | None = OUTPUT_OPTION) -> None:
    """One agent."""
    s = session(ctx)
    emit(s, s.client().find_agent(agent), output, lambda a: fields_table(a, AGENT_FIELDS))


@agents_app.command("rm")
@handled
def agents_rm(
    ctx: typer.Context,
    agent: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete an agent (refused while it has a live deployment: `deployctl rm` that first)."""
    s = session(ctx)
    client = s.client()
    found = client.find_agent(agent)
    if not yes:
        typer.confirm(f"Delete agent {found['name']} ({found['id']})?", abort=True, err=True)
    client.delete_agent(found["id"])
    s.message(f"Agent {found['name']} deleted.")


@app.command()
@handled
def invoke(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="An agent's name or id."),
    data: str = typer.Option("{}", "--data", "-d", help="The JSON body to send; '-' reads it from stdin."),
    stream: bool = typer.Option(
        False, "--stream", help="Ask for a streamed answer and print it as it comes (the agent's own events)."
    ),
    session_id: str | None = typer.Option(
        None, "--session", help="A session id (X-Session-Id): calls with the same one reach the same replica."
    ),
    output: Output | None = typer.Option(Output.json, "-o", "--output", help="json (default), yaml or table."),
) -> None:
    """Call a deployed agent (one ready replica) and print its JSON answer; exit 1 if it answers 4xx/5xx."""
    s = session(ctx)
    text = sys.stdin.read() if data == "-" else data
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--data is not JSON: {exc}") from None
    client = s.client()
    agent_id = client.find_agent(agent)["id"]
    if stream:
        status = _invoke_streamed(s, client, agent_id, body, session_id, output)
    else:
        status, answer = client.interact(agent_id, body, session=session_id)
        emit(s, answer, output)
    if status >= 400:
        s.message(f"The agent answered HTTP {status}.")
        raise typer.Exit(1)


def _invoke_streamed(
    s: Session, client: Client, agent_id: str, body: Any, session_id: str | None, output: Output | None
) -> int:
    """Write the agent's streamed answer to stdout piece by piece, as it comes; its status code."""
    with client.interact_stream(agent_id, body, session=session_id) as (status, content_type, pieces):
        if content_type.startswith("application/json"):  # the agent answered plain JSON: shown as JSON is
            text = "".join(pieces)
            try:
                emit(s, json.loads(text), output)
            except ValueError:
                sys.stdout.write(text)
            return status
        ended_with_newline = True
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            ended_with_newline = piece.endswith("\n")
        if not ended_with_newline:
            sys.stdout.write("\n")
        return status


@keys_app.command("create")
@handled
def keys_create(
    ctx: typer.Context,
    agent: str = typer.Argument(...),
    name: str | None = typer.Option(None, "--name"),
    expires_in_days: int | None = typer.Option(None, "--expires-in-days"),
    scope: list[str] = typer.Option([], "--scope", help="invoke, telemetry, results (repeat; default: the service's)."),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Create an API key for an agent: the key is printed once, never again."""
    s = session(ctx)
    client = s.client()
    key = client.create_key(client.find_agent(agent)["id"], name=name, expires_in_days=expires_in_days, scopes=scope)
    s.message("Keep the key now: it is not shown again.")
    emit(s, key, output, lambda k: fields_table(k, ("id", "name", "key", "prefix", "scopes", "expires_at")))


@keys_app.command("ls")
@handled
def keys_ls(ctx: typer.Context, agent: str = typer.Argument(...), output: Output | None = OUTPUT_OPTION) -> None:
    """An agent's keys (never the keys themselves)."""
    s = session(ctx)
    client = s.client()
    page = client.list_keys(client.find_agent(agent)["id"])
    emit(
        s,
        page,
        output,
        lambda p: rows(
            ("ID", "NAME", "PREFIX", "SCOPES", "EXPIRES", "REVOKED"),
            p["items"],
            lambda k: (
                k["id"],
                k.get("name"),
                k.get("prefix"),
                ",".join(k.get("scopes") or []),
                k.get("expires_at"),
                k.get("revoked_at"),
            ),
        ),
    )


@keys_app.command("revoke")
@handled
def keys_revoke(
    ctx: typer.Context,
    agent: str = typer.Argument(...),
    key_id: str = typer.Argument(...),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Revoke a key: it stops working at once."""
    s = session(ctx)
    client = s.client()
    revoked = client.revoke_key(client.find_agent(agent)["id"], key_id)
    s.message(f"Key {key_id} revoked.")
    emit(s, revoked, output, lambda k: fields_table(k, ("id", "name", "prefix", "revoked_at")))


@secrets_app.command("set")
@handled
def secrets_set(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    value: str | None = typer.Option(
        None, "--value", help="The value (else read from stdin, so it stays out of the shell's history)."
    ),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Store a secret, or give a stored one a new value (used from each of its agents' next start or restart).

    The value is never shown again.
    """
    s = session(ctx)
    if value is None:
        if sys.stdin.isatty():
            value = typer.prompt(f"Value of {name}", hide_input=True, err=True)
        else:
            value = sys.stdin.read().rstrip("\n")
    if not value:
        raise UsageError("A secret needs a value: --value V, or on stdin.")
    client = s.client()
    existing = next((i for i in client.list_secrets() if i["name"] == name), None)
    if existing is None:
        stored = client.create_secret(name, value)
        s.message(f"Secret {name} stored.")
    else:
        stored = client.rotate_secret(existing["id"], value)
        users = stored.get("used_by") or []
        s.message(
            f"Secret {name} has a new value"
            + (f": {len(users)} agent(s) use it from their next start or restart." if users else ".")
        )
    emit(s, stored, output, lambda c: fields_table(c, ("id", "name", "created_at", "updated_at", "used_by")))


@secrets_app.command("ls")
@handled
def secrets_ls(ctx: typer.Context, output: Output | None = OUTPUT_OPTION) -> None:
    """Your secrets, by name (values are never returned)."""
    s = session(ctx)
    items = s.client().list_secrets()
    emit(
        s,
        items,
        output,
        lambda data: rows(("NAME", "ID", "CREATED"), data, lambda i: (i["name"], i["id"], i["created_at"])),
    )


@secrets_app.command("rm")
@handled
def secrets_rm(ctx: typer.Context, name: str = typer.Argument(..., help="The secret's name or id.")) -> None:
    """Remove a secret."""
    s = session(ctx)
    client = s.client()
    found = next((i for i in client.list_secrets() if name in (i["name"], i["id"])), None)
    if found is None:
        raise NotFound(404, "not_found", f"No secret named {name!r}.")
    client.delete_secret(found["id"])
    s.message(f"Secret {found['name']} removed.")
