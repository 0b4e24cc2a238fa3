"""deployctl, the command line: `app` (Typer) with its commands registered, and `main` (the console script)."""

from deploy_client.cli import agents, auth, deployments, observe
from deploy_client.cli.app import Runtime, app, main

__all__ = ["Runtime", "agents", "app", "auth", "deployments", "main", "observe"]
