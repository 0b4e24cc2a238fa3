"""The container driver lists the engine's labelled networks only where a deployment can have one.

In bridge mode every pass lists them (each deployment makes its own). In host mode none is ever made,
so a pass per deploy listing them is an engine call for nothing on the deploy's path: the driver looks
on its first pass (networks left from a bridge-mode past are still swept) and again only while the
last look found some.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from deploy_service.reconciler.drivers import ContainerDriver
from tests.fakes import FakeRunner
from tests.helpers import FAST


class NetworkedRunner(FakeRunner):
    """The in-memory runner with labelled networks (deployment ids) that can be listed and removed."""

    def __init__(self, *, network: str, networks: set[str] | None = None) -> None:
        super().__init__(network=network)
        self.networks = set(networks or ())
        self.listings = 0

    def list_networks(self) -> set[str]:
        self.listings += 1
        return set(self.networks)

    def remove_network(self, deployment_id: str) -> bool:
        found = deployment_id in self.networks
        self.networks.discard(deployment_id)
        return found


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as workers:
        yield workers


def passes(driver: ContainerDriver, count: int, *, live: set[str] | None = None) -> None:
    for _ in range(count):
        driver.remove_orphans(driver.observe(), live or set())


def test_host_mode_lists_networks_once_when_there_are_none(pool: ThreadPoolExecutor) -> None:
    runner = NetworkedRunner(network="host")
    passes(ContainerDriver(runner, FAST, pool), 5)
    assert runner.listings == 1


def test_host_mode_sweeps_networks_left_from_bridge_mode_then_stops_looking(pool: ThreadPoolExecutor) -> None:
    runner = NetworkedRunner(network="host", networks={"gone-1", "gone-2"})
    passes(ContainerDriver(runner, FAST, pool), 5)
    assert runner.networks == set()
    assert runner.listings == 1  # the pass that found them swept them all: nothing is left to look for


def test_host_mode_keeps_looking_while_a_live_deployment_holds_a_network(pool: ThreadPoolExecutor) -> None:
    runner = NetworkedRunner(network="host", networks={"live-1"})
    driver = ContainerDriver(runner, FAST, pool)
    passes(driver, 3, live={"live-1"})
    assert runner.listings == 3
    assert driver.observe().networks == {"live-1"}


def test_bridge_mode_lists_networks_every_pass(pool: ThreadPoolExecutor) -> None:
    runner = NetworkedRunner(network="bridge")
    passes(ContainerDriver(runner, FAST, pool), 4)
    assert runner.listings == 4
