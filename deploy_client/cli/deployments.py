"""Deployments: `deploy`, `ps`, `status`, `logs`, `events`, `scale`, `restart`, `stop`, `rm`, `releases`,
`rollback`, `metrics`, `alerts`. DEP is a deployment's id or an agent's name (its live, else latest, deployment)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import typer

from deploy_client.cli.app import WAIT_FAILED, Session, app, handled, session
from deploy_client.cli.output import (
    OUTPUT_OPTION,
    Output,
    ProgressLine,
    chosen,
    emit,
    fields_table,
    replicas,
    rows,
)
from deploy_client.client import Client
from deploy_client.waiting import Outcome, Waiter

DEPLOYMENT_FIELDS = (
    "id", "agent_id", "status", "desired_state", "replicas", "image", "revision", "error", "created_at",
    "ready_at", "ended_at",
)  # fmt: skip
WAIT = typer.Option(False, "--wait", "-w", help="Wait until it has finished (exit 3 if it failed).")
TIMEOUT = typer.Option(600.0, "--timeout", help="Seconds --wait waits at most (then exit 1).")


def _deployment_table(d: dict[str, Any]) -> Any:
    table = fields_table(d, DEPLOYMENT_FIELDS)
    for instance in d.get("instances") or []:
        table.add_row(
            f"replica {instance['index']}",
            f"{instance['status']} healthy={instance.get('healthy')} port={instance.get('port')} "
            f"restarts={instance.get('restarts')}",
        )
    return table


def _wait(s: Session, timeout: float, run: Callable[[Waiter], Outcome]) -> Outcome:
    """Run a `--wait` (`run(waiter)`), its progress on stderr: status, replicas ready, the latest event."""
    line = ProgressLine(s.err)

    def progress(deployment: dict[str, Any], event: dict[str, Any] | None) -> None:
        text = f"{deployment['status']} · {replicas(deployment)} ready"
        if event is not None:
            text += f" · {event['event_type']}: {event['message']}"
        line.show(text)

    try:
        return run(
            Waiter(s.client(), progress, sleep=s.runtime.sleep, interval=s.runtime.poll_interval, timeout=timeout)
        )
    finally:
        line.close()


def _finish(s: Session, outcome: Outcome, output: Output | None) -> None:
    emit(s, outcome.deployment, output, _deployment_table)
    if not outcome.ok:
        s.message(f"Failed: {outcome.message}")
        raise typer.Exit(WAIT_FAILED)
    s.message(f"Done: {outcome.message}")


@app.command()
@handled
def deploy(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="An agent's name or id."),
    replicas_: int | None = typer.Option(None, "--replicas", "-r", help="How many replicas (default 1)."),
    wait: bool = WAIT,
    timeout: float = TIMEOUT,
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Deploy an agent; with --wait, until it is ready (exit 3 if it failed). Prints the deployment."""
    s = session(ctx)
    client = s.client()
    deployment = client.deploy(client.find_agent(agent)["id"], replicas=replicas_)
    s.message(f"Deployment {deployment['id']} accepted ({deployment['status']}).")
    if wait:
        _finish(s, _wait(s, timeout, lambda w: w.deployed(deployment["id"])), output)
    else:
        emit(s, deployment, output, _deployment_table)


@app.command()
@handled
def ps(
    ctx: typer.Context,
    agent: str | None = typer.Option(None, "--agent", help="Only this agent's (name or id)."),
    status: str | None = typer.Option(None, "--status"),
    limit: int = typer.Option(50, "--limit"),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Deployments, newest first."""
    s = session(ctx)
    client = s.client()
    agent_id = client.find_agent(agent)["id"] if agent else None
    page = client.list_deployments(agent_id=agent_id, status=status, limit=limit)
    names = {a["id"]: a["name"] for a in client.all_agents()} if page["items"] else {}
    emit(
        s,
        page,
        output,
        lambda p: rows(
            ("ID", "AGENT", "STATUS", "READY", "REVISION", "IMAGE", "CREATED"),
            p["items"],
            lambda d: (
                d["id"],
                names.get(d["agent_id"], d["agent_id"]),
                d["status"],
                replicas(d),
                d.get("revision"),
                d.get("image"),
                d["created_at"],
            ),
        ),
    )


@app.command()
@handled
def status(ctx: typer.Context, dep: str = typer.Argument(...), output: Output | None = OUTPUT_OPTION) -> None:
    """One deployment, with its replicas."""
    s = session(ctx)
    emit(s, s.client().find_deployment(dep), output, _deployment_table)


def _line(line: dict[str, Any]) -> str:
    return f"{line.get('timestamp')} [{line.get('replica')}] {line.get('line')}"


@app.command()
@handled
def logs(
    ctx: typer.Context,
    dep: str = typer.Argument(...),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the deployment ends."),
    tail: int | None = typer.Option(None, "--tail", help="The last N lines."),
    replica: int | None = typer.Option(None, "--replica", help="Only this replica (its index)."),
    build: bool = typer.Option(False, "--build", help="The build log instead of the replicas' output."),
    previous: bool = typer.Option(False, "--previous", help="Replica N's previous container (needs --replica)."),
    output: Output | None = typer.Option(None, "-o", "--output", help="table (plain lines; default), json or yaml."),
) -> None:
    """A deployment's logs; -f follows them as they come (the service's event stream)."""
    s = session(ctx)
    client = s.client()
    deployment_id = client.find_deployment(dep)["id"]
    source = "build" if build else None
    kind = output or Output.table
    if follow:
        with client.follow_logs(deployment_id, tail=tail, replica=replica, source=source) as events:
            for event in events:
                if event.event is None:
                    sys.stdout.write((json.dumps(event.data) if kind == Output.json else _line(event.data)) + "\n")
                    sys.stdout.flush()
                elif event.event == "end":
                    s.message(f"-- end of logs ({(event.data or {}).get('status', '')})")
                    return
                elif event.event == "error":
                    s.message(f"Error: {(event.data or {}).get('message', event.data)}")
                    raise typer.Exit(1)
        return
    body = client.logs(deployment_id, tail=tail, replica=replica, source=source, previous=previous)
    emit(s, body, kind, lambda b: "\n".join(_line(line) for line in b["lines"]))


def _event_line(event: dict[str, Any]) -> str:
    return f"{event['created_at']} {event['event_type']:<18} {event['message']}"


@app.command()
@handled
def events(
    ctx: typer.Context,
    dep: str | None = typer.Argument(None, help="A deployment; none: every event you may see, across them."),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new events (with DEP: until the deployment ends)."
    ),
    event_type: str | None = typer.Option(None, "--type", help="Only events of this type."),
    agent: str | None = typer.Option(None, "--agent", help="Without DEP: only this agent's (a name or an id)."),
    since: str | None = typer.Option(None, "--since", help="Without DEP: only events at or after this ISO time."),
    limit: int = typer.Option(50, "--limit", min=1, max=200),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Events, oldest first: a deployment's, or without DEP the feed of all yours; -f keeps polling for new ones."""
    s = session(ctx)
    client = s.client()
    if dep is None:
        _feed(s, client, follow, event_type, agent, since, limit, output)
        return
    deployment_id = client.find_deployment(dep)["id"]
    page = client.events(deployment_id, event_type=event_type, limit=limit)
    if not follow:
        emit(s, page, output, lambda p: "\n".join(_event_line(e) for e in reversed(p["items"])))
        return
    as_json = chosen(output) != Output.table
    seen: set[str] = set()
    while True:
        _print_new(page, seen, _event_line, as_json=as_json)
        if page["deployment_status"] == "killed":
            s.message("-- the deployment is killed: no more events")
            return
        s.runtime.sleep(s.runtime.poll_interval)
        page = client.events(deployment_id, event_type=event_type, limit=200)


def _print_new(
    page: dict[str, Any], seen: set[str], line: Callable[[dict[str, Any]], str], *, as_json: bool
) -> str | None:
    """Print the page's events not printed yet, oldest first (JSON lines, or `line`); the newest one's time."""
    newest = None
    for event in reversed(page["items"]):
        if event["id"] not in seen:
            seen.add(event["id"])
            newest = event["created_at"]
            sys.stdout.write((json.dumps(event) if as_json else line(event)) + "\n")
            sys.stdout.flush()
    return newest


def _feed_line(event: dict[str, Any]) -> str:
    return f"{event['created_at']} {event['deployment_id'][:8]} {event['event_type']:<18} {event['message']}"


def _feed(
    s: Session,
    client: Client,
    follow: bool,
    event_type: str | None,
    agent: str | None,
    since: str | None,
    limit: int,
    output: Output | None,
) -> None:
    """The feed (`GET /v1/events`); with `follow`, polled for events at or after the newest seen (Ctrl-C ends)."""
    agent_id = client.find_agent(agent)["id"] if agent else None
    page = client.feed(event_type=event_type, agent_id=agent_id, since=since, limit=limit)
    if not follow:
        emit(s, page, output, lambda p: "\n".join(_feed_line(e) for e in reversed(p["items"])))
        return
    as_json = chosen(output) != Output.table
    seen: set[str] = set()
    while True:
        since = _print_new(page, seen, _feed_line, as_json=as_json) or since
        s.runtime.sleep(s.runtime.poll_interval)
        page = client.feed(event_type=event_type, agent_id=agent_id, since=since, limit=200)


def _rollout(
    s: Session,
    deployment: dict[str, Any],
    wait: bool,
    timeout: float,
    output: Output | None,
    requested: tuple[str, ...],
) -> None:
    if wait:
        _finish(s, _wait(s, timeout, lambda w: w.rolled_out(deployment["id"], requested)), output)
    else:
        emit(s, deployment, output, _deployment_table)


@app.command()
@handled
def scale(
    ctx: typer.Context,
    dep: str = typer.Argument(...),
    replicas_: int = typer.Argument(..., metavar="REPLICAS", help="The new number of replicas."),
    wait: bool = WAIT,
    timeout: float = TIMEOUT,
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Change the number of replicas of a running deployment; --wait: until exactly that many are ready."""
    s = session(ctx)
    client = s.client()
    deployment = client.scale(client.find_deployment(dep)["id"], replicas_)
    s.message(f"Scaling {deployment['id']} to {replicas_}.")
    if wait:
        _finish(s, _wait(s, timeout, lambda w: w.scaled(deployment["id"], replicas_)), output)
    else:
        emit(s, deployment, output, _deployment_table)


@app.command()
@handled
def restart(
    ctx: typer.Context,
    dep: str = typer.Argument(...),
    wait: bool = WAIT,
    timeout: float = TIMEOUT,
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Restart with the agent's current settings (a new release if they changed); --wait: until that rollout
    ends (exit 3 if it failed and was rolled back)."""
    s = session(ctx)
    client = s.client()
    deployment = client.restart(client.find_deployment(dep)["id"])
    s.message(f"Restart of {deployment['id']} accepted (revision {deployment.get('revision')}).")
    _rollout(s, deployment, wait, timeout, output, ("restart_requested",))


@app.command()
@handled
def rollback(
    ctx: typer.Context,
    dep: str = typer.Argument(...),
    to: int | None = typer.Option(None, "--to", help="The release number (default: the one before the current)."),
    wait: bool = WAIT,
    timeout: float = TIMEOUT,
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Roll back to an earlier release (a new release with its image and config); --wait: until that rollout ends."""
    s = session(ctx)
    client = s.client()
    deployment = client.rollback(client.find_deployment(dep)["id"], release=to)
    s.message(f"Rollback of {deployment['id']} accepted (release {deployment.get('revision')}).")
    _rollout(s, deployment, wait, timeout, output, ("rollback_requested",))


@app.command()
@handled
def stop(ctx: typer.Context, dep: str = typer.Argument(...), output: Output | None = OUTPUT_OPTION) -> None:
    """Stop a deployment (its containers go; `restart` starts it again)."""
    s = session(ctx)
    client = s.client()
    deployment = client.stop(client.find_deployment(dep)["id"])
    s.message(f"Stop of {deployment['id']} accepted.")
    emit(s, deployment, output, _deployment_table)


@app.command("rm")
@handled
def remove(
    ctx: typer.Context,
    dep: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Delete a deployment: killed, its containers removed (the agent stays)."""
    s = session(ctx)
    client = s.client()
    found = client.find_deployment(dep)
    if not yes:
        typer.confirm(f"Delete deployment {found['id']}?", abort=True, err=True)
    deployment = client.delete_deployment(found["id"])
    s.message(f"Deployment {deployment['id']} is {deployment['status']}.")
    emit(s, deployment, output, _deployment_table)


@app.command()
@handled
def releases(
    ctx: typer.Context,
    dep: str = typer.Argument(...),
    number: int | None = typer.Argument(None, help="One release, with its changes against the one before."),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """A deployment's releases, newest first (or one, with its changes)."""
    s = session(ctx)
    client = s.client()
    deployment_id = client.find_deployment(dep)["id"]
    if number is not None:
        release = client.release(deployment_id, number)

        def detail(r: dict[str, Any]) -> Any:
            table = fields_table(
                r,
                (
                    "number",
                    "status",
                    "reason",
                    "rollback_of",
                    "image",
                    "image_id",
                    "created_at",
                    "activated_at",
                    "ended_at",
                    "error",
                ),
            )
            for change in r.get("changes") or []:
                table.add_row(f"~ {change['field']}", f"{change['from']} → {change['to']}")
            return table

        emit(s, release, output, detail)
        return
    page = client.releases(deployment_id)
    emit(
        s,
        page,
        output,
        lambda p: rows(
            ("#", "STATUS", "REASON", "IMAGE", "CREATED", "ERROR"),
            p["items"],
            lambda r: (
                r["number"],
                r["status"],
                r["reason"] + (f" of {r['rollback_of']}" if r.get("rollback_of") else ""),
                r["image"],
                r["created_at"],
                r.get("error"),
            ),
        ),
    )
