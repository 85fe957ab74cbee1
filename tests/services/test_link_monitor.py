"""The edge's kernel view of its link, on real loopback TCP connections."""

from __future__ import annotations

import inspect
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from edge_service.link import LinkMonitor
from neukonfig.tcp_info import TcpInfo, read_tcp_info


class _OneObjectTwoConnections:
    """A socket object whose connection changes underneath: what a freed socket object's
    address taken by the next connection looks like to ``id()``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getsockopt(self, *args: int) -> bytes:
        return self.sock.getsockopt(*args)

    def getsockname(self) -> object:
        return self.sock.getsockname()


class _Cloud:
    def __init__(self, sockets: list[object]) -> None:
        self._sockets = sockets

    def sockets(self) -> list[object]:
        return self._sockets


@pytest.fixture
def connections() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _sent(payload: int, opened: list[socket.socket]) -> socket.socket:
    """A loopback connection whose client has had ``payload`` bytes acknowledged."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    opened += [server, client, peer]
    client.sendall(b"x" * payload)
    received = 0
    while received < payload:
        received += len(peer.recv(1 << 20))
    deadline = time.monotonic() + 10
    while (info := read_tcp_info(client)) is None or info.bytes_acked < payload:
        assert time.monotonic() < deadline, "the kernel never acknowledged the payload"
        time.sleep(0.01)
    return client


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux's")
def test_a_new_connection_in_an_old_sockets_place_adds_no_delivered_bytes(connections):
    first = _sent(100_000, connections)
    second = _sent(1_000_000, connections)
    sock = _OneObjectTwoConnections(first)
    monitor = LinkMonitor(_Cloud([sock]), kernel_evidence=True)  # type: ignore[arg-type]
    monitor.kernel()
    sock.sock = second
    monitor.kernel()
    assert monitor.delivered_bytes == 0, "the second connection's bytes were never sent here"


def _busy_info(bytes_acked: int, delivery_rate_bps: float) -> TcpInfo:
    return TcpInfo(
        delivery_rate_bps=delivery_rate_bps,
        app_limited=False,
        rtt_s=0.01,
        min_rtt_s=0.001,
        bytes_acked=bytes_acked,
        unacked_segments=10,
        notsent_bytes=0,
        mss=1448,
    )


def test_a_busy_connection_not_acknowledged_since_the_last_reading_gives_no_rate():
    """The kernel keeps the rate of a connection's last acknowledgement: busy again after
    an idle spell, before any new acknowledgement, it is the rate from before the spell
    (43.8 mbit, read two seconds after a step down to 5)."""
    key = (1, ("127.0.0.1", 5000))
    stale = {key: _busy_info(1_000_000, 43.8e6)}
    assert LinkMonitor._lone_connection_rate(stale, acking=set()) is None
    assert LinkMonitor._lone_connection_rate(stale, acking={key}) == 43.8e6
    young = {key: _busy_info(1_000, 43.8e6)}
    assert LinkMonitor._lone_connection_rate(young, acking={key}) is None


def test_the_transfers_route_reads_the_monitor_on_the_event_loop(tiny_parts) -> None:
    """The monitor's deques and dicts belong to the event loop, where requests use them
    (``link_seconds``). A plain ``def`` route runs in a worker thread: the controller's
    poll of /v1/transfers then iterated the kernel marks while a request appended to them,
    and that request failed with "deque mutated during iteration" (a downtime bench)."""
    from edge_service.partition_app import create_app
    from edge_service.settings import EdgePartitionSettings
    from neukonfig.protocol import TRANSFERS_PATH

    settings = EdgePartitionSettings(
        partition_dir=tiny_parts, cut=3, cloud_url="http://127.0.0.1:9"
    )
    routes = [r for r in create_app(settings).routes if getattr(r, "path", None) == TRANSFERS_PATH]
    assert len(routes) == 1
    assert inspect.iscoroutinefunction(routes[0].endpoint)
