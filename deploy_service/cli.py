"""Flask commands: `flask create-admin` and `flask reconcile`."""

from __future__ import annotations

import signal
import threading

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from deploy_service.errors import Conflict
from deploy_service.extensions import db
from deploy_service.models import ROLE_ADMIN, User
from deploy_service.reconciler import Reconciler
from deploy_service.security import hash_password
from deploy_service.services.auth import create_user


@click.command("create-admin")
@click.option("--email", prompt=True, help="The admin's email.")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="ADMIN_PASSWORD",
    help="The password (or ADMIN_PASSWORD); prompted when absent.",
)
@click.option("--full-name", default=None, help="Display name.")
@with_appcontext
def create_admin(email: str, password: str, full_name: str | None) -> None:
    """Create an admin, or make an existing user admin and set its password."""
    if len(password) < 8:
        raise click.BadParameter("must be at least 8 characters", param_hint="--password")
    email = email.strip().lower()
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None:
        try:
            user = create_user(email=email, password=password, full_name=full_name, role=ROLE_ADMIN)
        except Conflict as exc:
            raise click.ClickException(exc.message) from exc
        click.echo(f"Created admin {user.email} ({user.id}).")
        return
    user.role = ROLE_ADMIN
    user.password_hash = hash_password(password)
    if full_name:
        user.full_name = full_name
    db.session.commit()
    click.echo(f"Made {user.email} ({user.id}) an admin and set its password.")


@click.command("reconcile")
@with_appcontext
def reconcile() -> None:
    """Run the reconciler in the foreground (next to gunicorn web workers); stops on SIGTERM/SIGINT.

    Exits non-zero if the loop ends without being asked to, so that a supervisor restarts it.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    reconciler = Reconciler(app)
    requested, finished = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        requested.set()
        finished.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        reconciler.start(on_exit=finished.set)
        click.echo("reconciler running; Ctrl-C to stop")
        finished.wait()
    finally:
        reconciler.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not requested.is_set():
        raise click.ClickException("the reconciler loop ended unexpectedly; exiting so that it is restarted")


def register_commands(app: Flask) -> None:
    """Attach the service's commands to `flask`."""
    app.cli.add_command(create_admin)
    app.cli.add_command(reconcile)
