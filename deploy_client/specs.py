"""Agent specs as files: what `deployctl apply` reads and `deployctl export` writes.

A spec is the body `POST /v1/agents` takes (`name`, `image` or `source`, `port`, `env`, `secrets` by name...),
in YAML or JSON; a file holds one spec, a list of them, or several YAML documents; a folder is read file by
file (`*.yaml`, `*.yml`, `*.json`, sorted). `${KEY}` in a string is filled from `--set KEY=VALUE`, else the
environment (`$${KEY}` stays literal); a missing key is an error naming the file.

`changes` decides what `apply` sends: the fields a spec gives that differ from the agent's (a nested object,
such as `resources`, is compared on the keys the spec gives, since the service fills in the others). Fields
a spec leaves out keep their values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy_client.errors import ClientError

PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
SUFFIXES = (".yaml", ".yml", ".json")
NESTED = ("source", "health_check", "resources", "registry_auth")
EXPORTED = (
    "name", "description", "image", "source", "port", "invoke_path", "command", "env", "secrets",
    "health_check", "resources", "read_only_rootfs", "run_as_user", "registry_auth",
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One agent spec and the file it came from."""

    path: Path
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["name"])


def load(target: Path, values: Mapping[str, str], environ: Mapping[str, str]) -> list[Spec]:
    """Every spec in a file or a folder, placeholders filled.

    Raises:
        ClientError: no such file, no spec files in the folder, a parse error, a spec that is not an object
            with a `name`, a name given twice, a placeholder with no value.
    """
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise ClientError(f"No {', '.join(SUFFIXES)} files in {target}.")
    elif target.is_file():
        files = [target]
    else:
        raise ClientError(f"No such file or folder: {target}.")
    specs: list[Spec] = []
    for path in files:
        for document in _documents(path):
            specs.append(Spec(path, _fill(document, path, values, environ)))
    seen: dict[str, Path] = {}
    for spec in specs:
        if spec.name in seen:
            raise ClientError(f"Agent {spec.name!r} is specified twice ({seen[spec.name]} and {spec.path}).")
        seen[spec.name] = spec.path
    return specs


def _documents(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    try:
        if path.suffix == ".json":
            loaded: list[Any] = [json.loads(text)]
        else:
            loaded = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (ValueError, yaml.YAMLError) as exc:
        raise ClientError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    documents: list[Any] = []
    for item in loaded:
        documents.extend(item if isinstance(item, list) else [item])
    for document in documents:
        if not isinstance(document, dict) or not isinstance(document.get("name"), str):
            raise ClientError(f"{path}: each spec must be an object with a string `name`.")
    return documents


def _fill(value: Any, path: Path, values: Mapping[str, str], environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            escaped, key = match.group(1), match.group(2)
            if escaped:
                return "${" + key + "}"
            if key in values:
                return values[key]
            if key in environ:
                return environ[key]
            raise ClientError(f"{path}: no value for ${{{key}}}: pass --set {key}=VALUE or set it in the environment.")

        return PLACEHOLDER.sub(replace, value)
    if isinstance(value, dict):
        return {k: _fill(v, path, values, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, path, values, environ) for v in value]
    return value


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`--set K=V` options as a dict. Raises `ClientError` for one without `=`."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClientError(f"--set takes KEY=VALUE, not {pair!r}.")
        values[key] = value
    return values


def changes(spec: dict[str, Any], agent: dict[str, Any]) -> dict[str, Any]:
    """The PATCH body that makes `agent` what `spec` says: the fields that differ (empty: unchanged).

    Switching between `image` and `source` clears the other one.
    """
    patch: dict[str, Any] = {}
    for field, wanted in spec.items():
        if field == "name":
            continue
        current = agent.get(field)
        if field in NESTED and isinstance(wanted, dict) and isinstance(current, dict):
            if any(current.get(key) != value for key, value in wanted.items()):
                patch[field] = wanted
        elif field in ("env", "secrets"):
            if (wanted or {}) != (current or {}):
                patch[field] = wanted
        elif wanted != current:
            patch[field] = wanted
    if patch.get("image") and agent.get("source"):
        patch["source"] = None
    if patch.get("source") and agent.get("image"):
        patch["image"] = None
    return patch


def export(agent: dict[str, Any]) -> dict[str, Any]:
    """The spec `apply` takes for `agent`: no ids, status or times; secrets by name; empty fields left out."""
    spec: dict[str, Any] = {}
    for field in EXPORTED:
        value = agent.get(field)
        if value is None or value == {} and field in ("env", "secrets"):
            continue
        spec[field] = value
    return spec


def dump_yaml(data: Any) -> str:
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))
