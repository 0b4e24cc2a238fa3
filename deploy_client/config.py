"""Where deployctl keeps its contexts and logins: `$XDG_CONFIG_HOME/deployctl/` (default `~/.config/deployctl/`).

- `config.json`: the named contexts (`{current, contexts: {name: {url}}}`); nothing secret.
- `credentials.json` (mode 0600, in a 0700 folder): per service URL, the login's tokens and email. Keyed by
  URL, not by context name, so a token is only ever sent to the service that issued it, whatever `--url` or
  the context says.

`resolve` turns the flags and the environment into the one `Target` a command talks to: `--url`, else
`DEPLOYCTL_URL`, else the chosen context's URL, else `http://localhost:5000`; the token from `DEPLOYCTL_TOKEN`
(a personal or an access token, never stored), else the stored login of that URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_client.errors import ClientError

DEFAULT_URL = "http://localhost:5000"
DEFAULT_CONTEXT = "default"


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/deployctl`, or `~/.config/deployctl`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "deployctl"


def normalize_url(url: str) -> str:
    """The URL without a trailing slash; refused unless http(s)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"Not an http(s) URL: {url!r}.")
    return url


@dataclass(frozen=True)
class Credentials:
    """A stored login: its tokens, for one service URL."""

    access_token: str | None
    refresh_token: str | None
    email: str | None = None

    def __repr__(self) -> str:  # never show a token, even in a traceback
        return f"Credentials(email={self.email!r}, access_token=***, refresh_token=***)"


@dataclass(frozen=True)
class Target:
    """What one command talks to: the URL, the context it came from, and the token to send."""

    url: str
    context: str
    token: str | None
    token_from_env: bool

    def __repr__(self) -> str:
        return f"Target(url={self.url!r}, context={self.context!r}, token={'***' if self.token else None})"


class Store:
    """The contexts and credentials files of one config folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config_path = directory / "config.json"
        self.credentials_path = directory / "credentials.json"

    # -- contexts ----------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        data = _read(self.config_path)
        data.setdefault("contexts", {})
        data.setdefault("current", DEFAULT_CONTEXT)
        return data

    def contexts(self) -> dict[str, dict[str, Any]]:
        """Every named context (`{name: {url}}`), with `default` when none was added."""
        contexts: dict[str, dict[str, Any]] = dict(self._config()["contexts"])
        contexts.setdefault(DEFAULT_CONTEXT, {"url": DEFAULT_URL})
        return contexts

    def current(self) -> str:
        return str(self._config()["current"])

    def add_context(self, name: str, url: str) -> None:
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ClientError("A context name is letters, digits, '-', '_' or '.'.")
        data = self._config()
        data["contexts"][name] = {"url": normalize_url(url)}
        _write(self.directory, self.config_path, data, mode=0o644)

    def use_context(self, name: str) -> None:
        if name not in self.contexts():
            raise ClientError(f"No context named {name!r}: add it with `deployctl context add {name} URL`.")
        data = self._config()
        data["current"] = name
        _write(self.directory, self.config_path, data, mode=0o644)

    # -- credentials ---------------------------------------------------------------------------------

    def credentials(self, url: str) -> Credentials | None:
        entry = _read(self.credentials_path).get(url)
        if not isinstance(entry, dict):
            return None
        return Credentials(entry.get("access_token"), entry.get("refresh_token"), entry.get("email"))

    def save_credentials(self, url: str, credentials: Credentials) -> None:
        data = _read(self.credentials_path)
        data[url] = {
            "access_token": credentials.access_token,
            "refresh_token": credentials.refresh_token,
            "email": credentials.email,
        }
        _write(self.directory, self.credentials_path, data, mode=0o600)

    def forget(self, url: str) -> bool:
        """Drop the stored login of `url`; whether there was one."""
        data = _read(self.credentials_path)
        if data.pop(url, None) is None:
            return False
        _write(self.directory, self.credentials_path, data, mode=0o600)
        return True

    # -- resolution ----------------------------------------------------------------------------------

    def resolve(self, *, url: str | None, context: str | None, environ: Mapping[str, str] | None = None) -> Target:
        """The URL and token a command uses (see the module's docstring for the order)."""
        env = os.environ if environ is None else environ
        contexts = self.contexts()
        name = context or env.get("DEPLOYCTL_CONTEXT") or self.current()
        if name not in contexts:
            raise ClientError(f"No context named {name!r}: add it with `deployctl context add {name} URL`.")
        chosen = url or env.get("DEPLOYCTL_URL") or contexts[name].get("url") or DEFAULT_URL
        resolved = normalize_url(chosen)
        token = env.get("DEPLOYCTL_TOKEN") or None
        if token:
            return Target(resolved, name, token, True)
        stored = self.credentials(resolved)
        return Target(resolved, name, stored.access_token if stored else None, False)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClientError(f"Cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _write(directory: Path, path: Path, data: dict[str, Any], *, mode: int) -> None:
    """Write `data` as JSON through a temporary file created with `mode` (never briefly world-readable)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(data, handle, indent=2)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
