"""deployctl's Typer app: the global options, the session a command talks through, and the exit codes.

Exit codes: 0 ok; 1 an API error or a refusal of the client (its message on stderr, never a traceback);
2 bad usage (Typer's own, and a bad `--set`, `--data`...); 3 a `--wait` that ended failed. stdout carries only
the result; progress, prompts and messages go to stderr.

Tests run the app in-process: `CliRunner().invoke(app, args, obj=Runtime(transport=WSGITransport(app=flask_app)))`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import typer
from rich.console import Console

from deploy_client.client import Client
from deploy_client.config import Credentials, Store, Target, config_dir
from deploy_client.errors import ApiError, ClientError, NotLoggedIn
from deploy_client.waiting import WaitTimeout

OK, API_ERROR, USAGE, WAIT_FAILED = 0, 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])


class UsageError(ClientError):
    """A command line the client refuses before any request (exit code 2)."""


@dataclass
class Runtime:
    """What differs between a real run and a test: the transport, the clock, the environment."""

    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    poll_interval: float = 1.0


class Session:
    """One command's view: the store, the target and a client made on first use."""

    def __init__(self, runtime: Runtime, *, url: str | None, context: str | None) -> None:
        self.runtime = runtime
        self.store = Store(config_dir(runtime.environ))
        self._url, self._context = url, context
        self._client: Client | None = None
        self.out = Console(soft_wrap=True)
        self.err = Console(stderr=True, soft_wrap=True)

    @functools.cached_property
    def target(self) -> Target:
        return self.store.resolve(url=self._url, context=self._context, environ=self.runtime.environ)

    def anonymous(self) -> Client:
        """A client without a credential (login)."""
        return Client(self.target.url, transport=self.runtime.transport)

    def client(self) -> Client:
        """A client with the target's credential; `NotLoggedIn` without one."""
        if self._client is not None:
            return self._client
        target = self.target
        if not target.token:
            raise NotLoggedIn(
                f"Not logged in to {target.url}: run `deployctl login --email EMAIL` or set DEPLOYCTL_TOKEN."
            )
        refresh = None
        if not target.token_from_env:
            stored = self.store.credentials(target.url)
            refresh = stored.refresh_token if stored else None

        def save(access: str, refresh_token: str | None) -> None:
            stored = self.store.credentials(target.url)
            email = stored.email if stored else None
            self.store.save_credentials(target.url, Credentials(access, refresh_token, email))

        self._client = Client(
            target.url, token=target.token, refresh_token=refresh, on_tokens=save, transport=self.runtime.transport
        )
        return self._client

    def message(self, text: str) -> None:
        """A line for people, on stderr."""
        self.err.print(text, highlight=False, markup=False)


app = typer.Typer(
    name="deployctl",
    help="Deploy Service from the command line: apply agents from files, deploy, follow logs, roll back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main_options(
    ctx: typer.Context,
    url: str | None = typer.Option(None, "--url", help="The service's URL (else DEPLOYCTL_URL, else the context's)."),
    context: str | None = typer.Option(None, "--context", help="A named context (else the current one)."),
) -> None:
    """Deploy Service's command line."""
    runtime = ctx.obj if isinstance(ctx.obj, Runtime) else Runtime()
    ctx.obj = Session(runtime, url=url, context=context)


def session(ctx: typer.Context) -> Session:
    obj = ctx.find_root().obj
    assert isinstance(obj, Session)
    return obj


def handled(function: F) -> F:
    """Turn the client's errors into a message on stderr and an exit code (no traceback)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except UsageError as exc:
            _fail(str(exc), USAGE)
        except (ApiError, ClientError, WaitTimeout) as exc:
            _fail(_describe(exc), API_ERROR)
        except httpx.HTTPError as exc:
            _fail(f"HTTP error: {exc}", API_ERROR)

    return wrapper  # type: ignore[return-value]


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiError) and exc.details:
        details = ", ".join(f"{k}: {v}" for k, v in exc.details.items())
        return f"Error: {exc} [{details}]"
    return f"Error: {exc}"


def _fail(text: str, code: int) -> None:
    Console(stderr=True, soft_wrap=True).print(text, highlight=False, markup=False)
    raise typer.Exit(code)


def main() -> None:
    """The `deployctl` console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
