"""`login`, `logout`, `whoami`, `tokens create|ls|revoke` and `context add|use|ls`."""

from __future__ import annotations

from typing import Any

import typer

from deploy_client.cli.app import app, handled, session
from deploy_client.cli.output import OUTPUT_OPTION, Output, emit, fields_table, rows
from deploy_client.config import Credentials, normalize_url
from deploy_client.errors import NotFound, Unauthorized

context_app = typer.Typer(help="Named services: add one, switch to it, list them.", no_args_is_help=True)
app.add_typer(context_app, name="context")
tokens_app = typer.Typer(
    help="Your personal access tokens (dsp_...) for scripts and CI: create (shown once), list, revoke.",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")

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


TOKEN_FIELDS = ("id", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")


@tokens_app.command("create")
@handled
def tokens_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="What the token is for (e.g. ci)."),
    scope: list[str] = typer.Option([], "--scope", help="read, write, deploy (repeat; default: read)."),
    expires_in_days: int | None = typer.Option(None, "--expires-in-days", min=1),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Create a personal access token; it is printed once, never again. Needs a login (a token cannot mint one)."""
    s = session(ctx)
    token = s.client().create_token(name, scopes=scope or None, expires_in_days=expires_in_days)
    s.message("Keep the token now: it is not shown again. Use it as DEPLOYCTL_TOKEN.")
    emit(s, token, output, lambda t: fields_table(t, ("id", "name", "key", "prefix", "scopes", "expires_at")))


@tokens_app.command("ls")
@handled
def tokens_ls(ctx: typer.Context, output: Output | None = OUTPUT_OPTION) -> None:
    """Your tokens, newest first, revoked ones included (never the tokens themselves)."""
    s = session(ctx)
    items = s.client().list_tokens()
    emit(
        s,
        items,
        output,
        lambda data: rows(
            ("ID", "NAME", "PREFIX", "SCOPES", "EXPIRES", "LAST USED", "REVOKED"),
            data,
            lambda t: (
                t["id"],
                t["name"],
                t["prefix"],
                ",".join(t["scopes"]),
                t["expires_at"],
                t["last_used_at"],
                t["revoked_at"],
            ),
        ),
    )


@tokens_app.command("revoke")
@handled
def tokens_revoke(
    ctx: typer.Context,
    token: str = typer.Argument(..., help="The token's id or name."),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """Revoke a token: it stops working at once."""
    s = session(ctx)
    client = s.client()
    found = next((t for t in client.list_tokens() if token in (t["id"], t["name"]) and not t["revoked_at"]), None)
    if found is None:
        raise NotFound(404, "not_found", f"No token of yours named {token!r} that still works.")
    revoked = client.revoke_token(found["id"])
    s.message(f"Token {found['name']} ({found['prefix']}...) revoked.")
    emit(s, revoked, output, lambda t: fields_table(t, TOKEN_FIELDS))
