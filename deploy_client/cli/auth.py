"""`login`, `logout`, `whoami` and `context add|use|ls`."""

from __future__ import annotations

from typing import Any

import typer

from deploy_client.cli.app import app, handled, session
from deploy_client.cli.output import OUTPUT_OPTION, Output, emit, fields_table, rows
from deploy_client.config import Credentials, normalize_url
from deploy_client.errors import Unauthorized

context_app = typer.Typer(help="Named services: add one, switch to it, list them.", no_args_is_help=True)
app.add_typer(context_app, name="context")

USER_FIELDS = ("id", "email", "full_name", "role", "created_at")


@app.command()
@handled
def login(
    ctx: typer.Context,
    email: str = typer.Option(..., "--email", "-e", help="Your account's email."),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Log in; the refresh token is kept in the config folder (mode 0600) and access tokens renewed by it.

    The password comes from DEPLOYCTL_PASSWORD, else a prompt (on stderr, not echoed).
    """
    s = session(ctx)
    password = s.runtime.environ.get("DEPLOYCTL_PASSWORD")
    if not password:
        password = typer.prompt("Password", hide_input=True, err=True)
    client = s.anonymous()
    tokens = client.login(email, password)
    s.store.save_credentials(s.target.url, Credentials(tokens["access_token"], tokens.get("refresh_token"), email))
    user = client.me()
    s.message(f"Logged in to {s.target.url} as {user['email']} ({user['role']}).")
    emit(s, user, output, lambda u: fields_table(u, USER_FIELDS))


@app.command()
@handled
def logout(ctx: typer.Context) -> None:
    """End the stored login (its tokens stop working on the service) and forget it."""
    s = session(ctx)
    stored = s.store.credentials(s.target.url)
    if stored is None:
        s.message(f"Not logged in to {s.target.url}.")
        return
    try:
        s.client().logout()
    except Unauthorized:
        pass  # already over on the service's side: forgetting it is all that is left
    s.store.forget(s.target.url)
    s.message(f"Logged out of {s.target.url}.")


@app.command()
@handled
def whoami(ctx: typer.Context, output: Output | None = OUTPUT_OPTION) -> None:
    """The account the current credential speaks for."""
    s = session(ctx)
    user = s.client().me()
    emit(s, user, output, lambda u: fields_table(u, USER_FIELDS))


@context_app.command("add")
@handled
def context_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A name for the service, e.g. staging."),
    url: str = typer.Argument(..., help="Its URL, e.g. https://deploy.example.com."),
    use: bool = typer.Option(False, "--use", help="Make it the current context too."),
) -> None:
    """Add (or change) a named context."""
    s = session(ctx)
    s.store.add_context(name, normalize_url(url))
    if use:
        s.store.use_context(name)
    s.message(f"Context {name!r} → {normalize_url(url)}{' (current)' if use else ''}.")


@context_app.command("use")
@handled
def context_use(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Make a context the current one."""
    s = session(ctx)
    s.store.use_context(name)
    s.message(f"Using context {name!r}.")


@context_app.command("ls")
@handled
def context_ls(ctx: typer.Context, output: Output | None = OUTPUT_OPTION) -> None:
    """The contexts, the current one marked, with the login each has."""
    s = session(ctx)
    current = s.store.current()
    items: list[dict[str, Any]] = []
    for name, entry in sorted(s.store.contexts().items()):
        stored = s.store.credentials(entry["url"])
        items.append(
            {"name": name, "url": entry["url"], "current": name == current, "email": stored.email if stored else None}
        )
    emit(
        s,
        items,
        output,
        lambda data: rows(
            ("", "NAME", "URL", "LOGGED IN AS"),
            data,
            lambda i: ("*" if i["current"] else "", i["name"], i["url"], i["email"]),
        ),
    )
