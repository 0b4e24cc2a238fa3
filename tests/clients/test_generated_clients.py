"""Clients generated from the live OpenAPI spec, as a frontend or SDK team would generate them.

Two generators, pinned (openapi-python-client in requirements-dev.txt; openapi-typescript and
typescript in tests/clients/package.json, installed by scripts/ensure_client_tools.sh):
- openapi-python-client must finish without a single warning, with a model for every component schema
  and a function for every operation (it drops, with only a warning, what it cannot type);
- the generated Python models must read real response bodies of this service;
- openapi-typescript must type no object as `Record<string, never>` (an object that may have no keys),
  and `tsc --strict` must compile reads_deployment.ts, which reads `deployment.replicas.ready` and
  `deployment.instances[0].port` from the typed response of `getDeployment`.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.reconciler import Reconciler
from tests.helpers import ROOT, Api, converge, deploy, new_agent

HERE = ROOT / "tests" / "clients"
PACKAGE = "deploy_service_client"
METHODS = ("get", "post", "put", "patch", "delete")


def _snake(name: str) -> str:
    """openapi-python-client's file names: `listDeployments` → `list_deployments`, `agent-deployments` → ..."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"[^a-zA-Z0-9]+", "_", name).strip("_").lower()


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="session")
def client_tools() -> dict[str, Path]:
    """The pinned generators; scripts/ensure_client_tools.sh installs them (make test runs it)."""
    tools = {
        "openapi-python-client": Path(sys.executable).parent / "openapi-python-client",
        "openapi-typescript": HERE / "node_modules" / ".bin" / "openapi-typescript",
        "tsc": HERE / "node_modules" / ".bin" / "tsc",
    }
    missing = [name for name, path in tools.items() if not path.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/ensure_client_tools.sh", pytrace=False)
    return tools


@pytest.fixture
def spec_file(client: FlaskClient, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    spec = client.get("/openapi.json").get_json()
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(spec))
    return spec, path


def _operation_ids(spec: dict[str, Any]) -> list[str]:
    return [
        operation["operationId"]
        for item in spec["paths"].values()
        for method, operation in item.items()
        if method in METHODS
    ]


@pytest.fixture
def python_client(
    client_tools: dict[str, Path], spec_file: tuple[dict[str, Any], Path], tmp_path: Path
) -> Iterator[tuple[Path, str]]:
    spec, path = spec_file
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"package_name_override": PACKAGE, "project_name_override": PACKAGE}))
    result = _run(
        [
            str(client_tools["openapi-python-client"]),
            "generate",
            "--path",
            str(path),
            "--config",
            str(config),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / PACKAGE),
        ],
        tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path / PACKAGE, output
    finally:
        sys.path.remove(str(tmp_path))
        for name in [module for module in sys.modules if module.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_openapi_python_client_generates_everything_without_a_warning(
    python_client: tuple[Path, str], spec_file: tuple[dict[str, Any], Path]
) -> None:
    package, output = python_client
    spec, _ = spec_file
    assert not re.search(r"warning|unable to|will not be generated|removal of", output, re.IGNORECASE), output
    functions = {path.stem for path in (package / "api").rglob("*.py")}
    ungenerated = [op for op in _operation_ids(spec) if _snake(op) not in functions]
    assert not ungenerated, f"operations without a generated function: {ungenerated}"
    models = {path.stem for path in (package / "models").glob("*.py")}
    dropped = [name for name in spec["components"]["schemas"] if _snake(name) not in models]
    assert not dropped, f"schemas without a generated model: {dropped}"


def test_generated_python_models_read_real_bodies(
    python_client: tuple[Path, str], app: Flask, api: Api, reconciler: Reconciler
) -> None:
    agent = new_agent(app, api)
    deployment = deploy(api, agent["id"], replicas=2)
    converge(reconciler, lambda: api.get(f"/v1/deployments/{deployment['id']}").get_json()["status"] == "ready")
    body = api.get(f"/v1/deployments/{deployment['id']}").get_json()
    models = importlib.import_module(f"{PACKAGE}.models")
    parsed = models.Deployment.from_dict(body)
    assert parsed.id == body["id"]
    assert parsed.replicas.desired == 2
    assert parsed.replicas.ready == 2
    assert [instance.port for instance in parsed.instances] == [i["port"] for i in body["instances"]]
    assert parsed.status.value == body["status"]
    assert parsed.config.port == body["config"]["port"]
    assert [instance.index for instance in parsed.instances] == [i["index"] for i in body["instances"]]
    page = models.DeploymentPage.from_dict(api.get("/v1/deployments").get_json())
    assert [item.id for item in page.items] == [deployment["id"]]
    assert models.Agent.from_dict(api.get(f"/v1/agents/{agent['id']}").get_json()).name == agent["name"]


def test_openapi_typescript_types_what_a_dashboard_reads(
    client_tools: dict[str, Path], spec_file: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    _, path = spec_file
    work = tmp_path / "ts"
    work.mkdir()
    for name in ("reads_deployment.ts", "tsconfig.json"):
        shutil.copy(HERE / name, work / name)
    generated = _run([str(client_tools["openapi-typescript"]), str(path), "-o", str(work / "api.d.ts")], work)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert not re.search(r"warn|⚠|error", generated.stdout + generated.stderr, re.IGNORECASE), generated.stderr
    types = (work / "api.d.ts").read_text()
    loose = [
        line.strip()
        for line in types.splitlines()
        if "Record<string, never>" in line and not line.startswith("export type")  # empty top-level maps
    ]
    assert not loose, f"objects typed as having no keys: {loose}"
    compiled = _run([str(client_tools["tsc"]), "-p", str(work / "tsconfig.json")], work)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
