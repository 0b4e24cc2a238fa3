"""Host ports for host-mode replicas are checked where the service reaches replicas (`REPLICA_HOST`).

With a remote engine the ports that matter are the engine host's, not the service's: a listener on the
service's own loopback says nothing about them. 127.0.0.2 stands for the engine host here (a loopback
address other than the service's 127.0.0.1); every socket stays on loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from deploy_service.reconciler.ports import free_port


def _free_pair() -> tuple[int, int]:
    """Two consecutive ports free on every loopback address a moment ago."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("0.0.0.0", 0))
            low = probe.getsockname()[1]
        if low >= 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", low + 1))
            except OSError:
                continue
        return low, low + 1
    raise AssertionError("no two consecutive free ports")


@pytest.fixture()
def listen() -> Iterator[object]:
    sockets: list[socket.socket] = []

    def _listen(host: str, port: int) -> None:
        server = socket.socket()
        server.bind((host, port))
        server.listen()
        sockets.append(server)

    yield _listen
    for server in sockets:
        server.close()


def test_a_port_taken_on_the_replica_host_is_skipped_one_taken_elsewhere_is_not(listen: object) -> None:
    low, high = _free_pair()
    listen("127.0.0.2", low)  # type: ignore[operator]
    listen("127.0.0.1", high)  # type: ignore[operator]

    for _ in range(10):  # the first port tried is random: each must land on `high`
        assert free_port(set(), (low, high), host="127.0.0.2", timeout=1.0) == high


def test_on_the_local_default_every_address_of_the_machine_counts(listen: object) -> None:
    """REPLICA_HOST=127.0.0.1: the engine is this machine, and a host-mode replica binds 0.0.0.0."""
    low, high = _free_pair()
    listen("127.0.0.2", low)  # type: ignore[operator]

    for _ in range(10):
        assert free_port(set(), (low, high), host="127.0.0.1", timeout=1.0) == high


def test_no_free_port_on_the_replica_host_is_an_error(listen: object) -> None:
    low, high = _free_pair()
    listen("127.0.0.2", low)  # type: ignore[operator]
    listen("127.0.0.2", high)  # type: ignore[operator]

    with pytest.raises(RuntimeError, match="no free port"):
        free_port(set(), (low, high), host="127.0.0.2", timeout=1.0)
