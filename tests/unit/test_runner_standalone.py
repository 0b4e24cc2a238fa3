"""The runner stands alone: it has its own errors, and the service gives them their meaning."""

from __future__ import annotations

import pytest

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
    create_runner,
)


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
    ("config", "message"),
    [({"RUNNER": "kubernetes"}, "RUNNER must be one of docker, swarm"), ({"DOCKER_NETWORK_MODE": "overlay"}, "auto")],
)
def test_a_setting_the_runner_refuses_is_a_config_error_at_startup(config: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        with runner_settings_checked():
            create_runner(config)

    assert isinstance(refused.value.__cause__, RunnerConfigError)


def test_other_errors_pass_through_the_startup_check() -> None:
    with pytest.raises(EngineUnavailable):
        with runner_settings_checked():
            raise EngineUnavailable()
