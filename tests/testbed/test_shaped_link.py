"""The shaping proxy paces real TCP traffic at the configured rate, and retunes live."""

from __future__ import annotations

import asyncio
import time

import pytest

from testbed.shaped_link import ShapedLink


async def sink_server() -> tuple[asyncio.Server, list[int]]:
    received: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while data := await reader.read(65536):
            total += len(data)
        received.append(total)
        writer.write(str(total).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, received


async def send_through(port: int, size: int) -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(b"\0" * size)
    await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed, answer


@pytest.mark.parametrize(("rate_bps", "size"), [(8e6, 500_000), (2e6, 125_000)])
def test_upload_is_paced_at_the_rate(rate_bps: float, size: int) -> None:
    async def scenario() -> tuple[float, bytes]:
        server, _ = await sink_server()
        link = ShapedLink(rate_bps=rate_bps)
        await link.open()
        port = await link.add_route("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            return await send_through(port, size)
        finally:
            server.close()

    elapsed, answer = asyncio.run(scenario())
    expected = size * 8 / rate_bps
    assert answer == str(size).encode()
    assert 0.8 * expected <= elapsed <= 1.5 * expected + 0.1


def test_rate_changes_apply_to_traffic_in_flight() -> None:
    async def scenario() -> float:
        server, _ = await sink_server()
        link = ShapedLink(rate_bps=1e6)
        await link.open()
        port = await link.add_route("127.0.0.1", server.sockets[0].getsockname()[1])
        asyncio.get_running_loop().call_later(0.3, link.set_rate, 50e6)
        try:
            elapsed, _ = await send_through(port, 1_000_000)  # 8 s at 1 mbit
            return elapsed
        finally:
            server.close()

    assert asyncio.run(scenario()) < 2.0


def test_routes_in_a_thread_share_one_link() -> None:
    """Two routes through one link: together they get the link's rate, not twice it."""
    received: list[int] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(len(await reader.read()))
        writer.close()

    async def scenario(urls: list[str]) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(send_through(int(url.rsplit(":", 1)[1]), 250_000) for url in urls))
        return time.perf_counter() - started

    async def make_targets() -> list[asyncio.Server]:
        return [await asyncio.start_server(sink, "127.0.0.1", 0) for _ in range(2)]

    loop = asyncio.new_event_loop()
    targets = loop.run_until_complete(make_targets())
    link = ShapedLink(rate_bps=4e6).start_in_thread()
    try:
        urls = [link.route(f"http://127.0.0.1:{t.sockets[0].getsockname()[1]}") for t in targets]
        runner = loop.create_task(scenario(urls))
        elapsed = loop.run_until_complete(runner)
        assert elapsed >= 0.8 * 500_000 * 8 / 4e6
        assert sorted(received) == [250_000, 250_000]
        link.unroute(f"http://127.0.0.1:{targets[0].sockets[0].getsockname()[1]}")
    finally:
        link.stop()
        for target in targets:
            target.close()
        loop.close()
