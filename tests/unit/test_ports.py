"""Host ports for host-mode replicas are checked where the service reaches replicas (`REPLICA_HOST`).

With a remote engine the ports that matter are the engine host's, not the service's: a listener on the
service's own loopback says nothing about them. 127.0.0.2 stands for the engine host here (a loopback
address other than the service's 127.0.0.1); every socket stays on loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy_service.reconciler.ports import ephemeral_overlap, free_block, free_port


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


def _linger(port: int) -> None:
    """Leave a connection of `port` in TIME_WAIT, as a replica that closes its side first leaves each one."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server's side closes first: it is the one that waits out TIME_WAIT
            client.recv(1)


def test_a_port_only_lingering_after_its_connections_is_free_when_no_other_is(listen: object) -> None:
    """A replica that served a minute ago leaves its port in TIME_WAIT; a server binding with SO_REUSEADDR
    (as busybox, http.server, gunicorn or uvicorn do) can bind it, so it is not "taken". A port with
    nothing lingering is still preferred, for a server that binds without SO_REUSEADDR."""
    low, high = _free_pair()
    _linger(low)
    with socket.socket() as strict:
        with pytest.raises(OSError):
            strict.bind(("0.0.0.0", low))  # what the probe saw before: "in use"
    for _ in range(10):
        assert free_port(set(), (low, high)) == high
    listen("127.0.0.1", high)  # type: ignore[operator]
    assert free_port(set(), (low, high)) == low


def test_a_service_block_whose_ports_linger_is_used_when_no_other_block_is_free(listen: object) -> None:
    """Swarm replicas get a fresh block of 100 per rollout: blocks of the last minute's rollouts linger."""
    for block in range(400, 500):  # two consecutive blocks free on every address
        try:
            for port in (block * 100 + 1, block * 100 + 2, block * 100 + 101, block * 100 + 102):
                with socket.socket() as probe:
                    probe.bind(("0.0.0.0", port))
        except OSError:
            continue
        break
    else:
        pytest.skip("no two free blocks")
    port_range = (block * 100, block * 100 + 199)
    _linger(block * 100 + 2)
    assert free_block(set(), port_range, 2) == block + 1
    listen("127.0.0.1", (block + 1) * 100 + 1)  # type: ignore[operator]
    assert free_block(set(), port_range, 2) == block
    with pytest.raises(RuntimeError, match="no free block"):
        free_block({block}, port_range, 2)


def test_the_part_of_the_range_that_is_the_kernels_ephemeral_ports(tmp_path: Path) -> None:
    source = tmp_path / "ip_local_port_range"
    source.write_text("32768\t60999\n")
    assert ephemeral_overlap((20000, 29999), source=source) is None
    assert ephemeral_overlap((32000, 32999), source=source) == (32768, 32999)
    assert ephemeral_overlap((60000, 65000), source=source) == (60000, 60999)
    assert ephemeral_overlap((20000, 29999), source=tmp_path / "missing") is None  # not Linux: nothing to say
