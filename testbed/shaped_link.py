"""A user-space shaping proxy: the edge-to-cloud link when tc is not available.

A TCP proxy on loopback that forwards to a target and paces the client-to-server
direction (edge to cloud, where the cut tensor travels) with one token bucket for
the whole link, like ``tc ... tbf`` on a veth. The rate can change while traffic
flows. The reply direction is not shaped, as with tbf on the edge's egress only.

Run it in a background thread (``ShapedLink.start_in_thread``) from tests, benchmarks
and ``neukonfig up --link-rate``, or as
``python -m testbed.shaped_link --target HOST:PORT --rate 10mbit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from neukonfig.units import parse_bandwidth

CHUNK_BYTES = 16 * 1024
# tbf needs a burst of at least rate/HZ; 5 ms of traffic keeps pacing smooth at high
# rates without letting a whole cut tensor through unshaped at low ones.
BURST_SECONDS = 0.005
MIN_BURST_BYTES = 4 * 1024


@dataclass
class TokenBucket:
    rate_bps: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def burst_bytes(self) -> float:
        return max(MIN_BURST_BYTES, self.rate_bps / 8 * BURST_SECONDS)

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst_bytes, self.tokens + (now - self.updated) * self.rate_bps / 8)
        self.updated = now

    async def take(self, size: int) -> None:
        """Wait until ``size`` bytes may pass. One lock: the link is shared, FIFO."""
        async with self.lock:
            self._refill()
            self.tokens -= size
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens * 8 / self.rate_bps)
                self._refill()

    def set_rate(self, rate_bps: float) -> None:
        self._refill()
        self.rate_bps = rate_bps


class ShapedLink:
    """One shaped link with a route (a listening port) per target; all share one bucket.

    ``route(url)`` returns the URL to use instead of ``url``: connections to it are
    forwarded to ``url``'s host and port, paced by the link's rate.
    """

    # The edge's sockets end at this proxy on loopback: TCP_INFO there is not the link's.
    kernel_sees_link = False

    def __init__(self, *, rate_bps: float, listen_host: str = "127.0.0.1") -> None:
        self.listen_host = listen_host
        self.initial_rate_bps = rate_bps
        self.bytes_forwarded = 0
        self._bucket: TokenBucket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: dict[str, asyncio.Server] = {}
        self._users: dict[str, int] = {}  # URLs routed per host:port
        self._routing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._bucket = TokenBucket(self.initial_rate_bps)

    async def add_route(self, target_host: str, target_port: int) -> int:
        """Listen on a new port that forwards to the target; returns the port."""
        target = (target_host, target_port)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Cancelled by stop(): end quietly, or asyncio's server callback logs the
            # cancellation of every open connection as an unhandled exception.
            with contextlib.suppress(asyncio.CancelledError):
                await self._handle(reader, writer, target)

        server = await asyncio.start_server(handle, self.listen_host, 0)
        port = server.sockets[0].getsockname()[1]
        self._servers[f"{target_host}:{target_port}"] = server
        return port

    def route(self, url: str) -> str:
        """Thread-safe: a shaped URL for ``url`` (http://host:port[/prefix]), made on the
        link's loop. URLs on one host and port (partitions in one host process) share
        its route, which lasts until the last of them is unrouted."""
        parsed = urlsplit(url)
        assert self._loop is not None, "open the link first"
        key = f"{parsed.hostname}:{parsed.port}"
        with self._routing:
            if key not in self._servers:
                coroutine = self.add_route(parsed.hostname or "127.0.0.1", parsed.port or 80)
                asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)
            self._users[key] = self._users.get(key, 0) + 1
            port = self._servers[key].sockets[0].getsockname()[1]
        return f"{parsed.scheme}://{self.listen_host}:{port}{parsed.path}"

    def unroute(self, url: str) -> None:
        """Stop forwarding to ``url`` (the original URL given to ``route``), once nothing
        else routed on its host and port is left."""
        parsed = urlsplit(url)
        key = f"{parsed.hostname}:{parsed.port}"
        with self._routing:
            self._users[key] = self._users.get(key, 1) - 1
            if self._users[key] > 0:
                return
            self._users.pop(key, None)
            server = self._servers.pop(key, None)
        if server is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(server.close)

    async def _handle(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        target: tuple[str, int],
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            self._connections.discard(task)
            return
        try:
            await asyncio.gather(
                self._pump(client_r, server_w, shaped=True),
                self._pump(server_r, client_w, shaped=False),
            )
        finally:
            for writer in (client_w, server_w):
                writer.close()
            self._connections.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, shaped: bool
    ) -> None:
        assert self._bucket is not None
        # OSError too: write_eof on a socket whose peer already went raises ENOTCONN.
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK_BYTES):
                if shaped:
                    await self._bucket.take(len(data))
                    self.bytes_forwarded += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    def set_rate(self, rate_bps: float) -> None:
        """Change the link rate now; safe to call from any thread."""
        if self._loop is None or self._bucket is None:
            self.initial_rate_bps = rate_bps
            return
        self._loop.call_soon_threadsafe(self._bucket.set_rate, rate_bps)

    @property
    def rate_bps(self) -> float:
        return self._bucket.rate_bps if self._bucket else self.initial_rate_bps

    def start_in_thread(self) -> ShapedLink:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.open())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="shaped-link", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("shaped link did not start")
        return self

    async def _shutdown(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    close = stop  # the same call as TcLink.close, so callers need not tell links apart


def main() -> None:
    parser = argparse.ArgumentParser(description="Shape TCP traffic to a target on loopback.")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rate", default="10mbit", help="client-to-server rate, e.g. 10mbit")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    link = ShapedLink(rate_bps=parse_bandwidth(args.rate))

    async def run() -> None:
        await link.open()
        listen = await link.add_route(host, int(port))
        print(f"shaping 127.0.0.1:{listen} -> {args.target} at {args.rate}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
