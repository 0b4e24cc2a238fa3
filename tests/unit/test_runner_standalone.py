"""The runner stands alone: it imports nothing of the service, and the service gives its errors their meaning.

The runner and the reference rules are loaded in a fresh interpreter and the modules it ends up with
are listed. `deploy_service/__init__.py` is the Flask application factory, so the interpreter loads
them beneath an empty `deploy_service` package: what is checked is what the runner itself imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from marshmallow import ValidationError

from deploy_service import references
from deploy_service.errors import (
    ConfigError,
    EngineUnavailable,
    ServiceError,
    as_service_error,
    runner_settings_checked,
)
from deploy_service.runner import (
    BuildFailed,
    ImageUnavailable,
    ReplicaStartFailed,
    RunnerConfigError,
    RunnerError,
    RunnerSettings,
    create_runner,
)
from deploy_service.schemas.validators import validate_git_url, validate_image, validate_ref_name, validate_repo_path

PACKAGE = Path(__file__).resolve().parents[2] / "deploy_service"
FORBIDDEN_ROOTS = {"flask", "flask_smorest", "flask_sqlalchemy", "sqlalchemy", "marshmallow", "webargs", "werkzeug"}
FORBIDDEN_MODULES = {"deploy_service.extensions", "deploy_service.errors", "deploy_service.config"}

_LOADER = """
import json, sys, types
package = types.ModuleType("deploy_service")
package.__path__ = [sys.argv[1]]
sys.modules["deploy_service"] = package
import importlib
importlib.import_module(sys.argv[2])
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_import(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _LOADER, str(PACKAGE), module], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("module", ["deploy_service.runner", "deploy_service.references"])
def test_the_runner_and_the_reference_rules_import_nothing_of_the_service(module: str) -> None:
    loaded = _modules_after_import(module)

    assert module in loaded
    assert {name for name in loaded if name.split(".")[0] in FORBIDDEN_ROOTS} == set()
    assert loaded & FORBIDDEN_MODULES == set()


def test_the_import_check_sees_a_forbidden_import() -> None:
    """The check above can fail: the service's error module is seen, with Flask behind it."""
    loaded = _modules_after_import("deploy_service.errors")

    assert "flask" in loaded and "deploy_service.extensions" in loaded


def test_every_runner_error_is_a_runner_error_with_a_message_and_a_log() -> None:
    for error_type in (EngineUnavailable, ImageUnavailable, BuildFailed, ReplicaStartFailed, RunnerConfigError):
        assert issubclass(error_type, RunnerError)
        assert not issubclass(error_type, ServiceError)
    failed = BuildFailed("The image build failed", log="step 2/3")
    assert (failed.message, failed.log, str(failed)) == ("The image build failed", "step 2/3", "The image build failed")
    assert EngineUnavailable().message == "The container engine cannot be reached."


def test_engine_unavailable_is_the_contracts_503() -> None:
    error = as_service_error(EngineUnavailable("The container engine is not healthy: no space"))

    assert (error.status_code, error.kind, error.message) == (
        503,
        "engine_unavailable",
        "The container engine is not healthy: no space",
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (RunnerSettings(backend="kubernetes"), "RUNNER must be one of docker, swarm"),
        (RunnerSettings(network_mode="overlay"), "auto"),
    ],
)
def test_a_setting_the_runner_refuses_is_a_config_error_at_startup(settings: RunnerSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        with runner_settings_checked():
            create_runner(settings)

    assert isinstance(refused.value.__cause__, RunnerConfigError)


def test_other_errors_pass_through_the_startup_check() -> None:
    with pytest.raises(EngineUnavailable):
        with runner_settings_checked():
            raise EngineUnavailable()


@pytest.mark.parametrize(
    ("rule", "validator", "value"),
    [
        (references.check_image_reference, validate_image, "Not/An:image:"),
        (references.check_ref_name, validate_ref_name, "-x"),
        (references.check_repo_path, validate_repo_path, "../etc"),
        (partial(references.check_git_url, allow_local=False), partial(validate_git_url, allow_local=False), "ext::sh"),
        (partial(references.check_git_url, allow_local=False), partial(validate_git_url, allow_local=False), "/srv/r"),
        (partial(references.check_git_url, allow_local=True), partial(validate_git_url, allow_local=True), "/srv/../r"),
        (
            partial(references.check_git_url, allow_local=True),
            partial(validate_git_url, allow_local=True),
            "https://u@h/r",
        ),
    ],
)
def test_the_schemas_and_the_runner_refuse_with_the_same_sentence(
    rule: Callable[[str], None], validator: Callable[[str], None], value: str
) -> None:
    with pytest.raises(references.InvalidReference) as refused:
        rule(value)
    assert isinstance(refused.value, ValueError)

    with pytest.raises(ValidationError) as invalid:
        validator(value)
    assert invalid.value.messages == [str(refused.value)]


@pytest.mark.parametrize(
    ("publish_host", "mode", "bound"), [("10.0.0.5", "bridge", "10.0.0.5"), ("10.0.0.5", "host", None)]
)
def test_bridge_mode_publishes_the_agents_port_on_the_publish_host(
    publish_host: str, mode: str, bound: str | None
) -> None:
    """What the engine is asked for (no engine call: `create_host_config` is docker-py's own arithmetic)."""
    import docker

    from deploy_service.runner import DockerRunner
    from deploy_service.runner.base import ReplicaSpec

    runner = DockerRunner(RunnerSettings(network_mode=mode, publish_host=publish_host))
    api = docker.APIClient(base_url="tcp://127.0.0.1:1", version="1.43")
    spec = ReplicaSpec(deployment_id="d", agent_id="a", index=0, generation=1, image="x", port=8080, network_mode=mode)
    network = runner.network_name("d") if mode == "bridge" else "host"
    arguments = runner._create_arguments(api, spec, "65532:65532", network)
    bindings = arguments["host_config"].get("PortBindings")
    if bound is None:
        assert not bindings and arguments["host_config"]["NetworkMode"] == "host"
    else:
        assert bindings == {"8080/tcp": [{"HostIp": bound, "HostPort": ""}]}
        assert arguments["host_config"]["NetworkMode"] == "deploy-service-dd"  # its own network, never `bridge`
