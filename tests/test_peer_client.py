"""PeerClient against real sockets on loopback: a uvicorn app in a background thread, and raw
asyncio servers whose answers (and silences) each test chooses, so that every connection
and every arrival of a request can be counted."""

from __future__ import annotations

import asyncio
import enum
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from neukonfig import peer_client
from neukonfig.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnansweredError
from neukonfig.peer_client import READ_LIMIT, PeerClient, PeerResponse

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


# -- a real uvicorn server ----------------------------------------------------------------------


def _port_header(request: Request) -> dict[str, str]:
    """Each answer names the client port it came in on: one port per connection."""
    assert request.client is not None
    return {"x-client-port": str(request.client.port)}


async def echo(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("delay", 0)))
    return Response(await request.body(), headers=_port_header(request))


async def sized(request: Request) -> Response:
    return Response(pattern(int(request.path_params["size"])), headers=_port_header(request))


async def chunked(request: Request) -> StreamingResponse:
    data = pattern(int(request.path_params["size"]))

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 7_001):
            yield data[start : start + 7_001]

    return StreamingResponse(pieces(), headers=_port_header(request))


async def empty(request: Request) -> Response:
    return Response(status_code=204, headers=_port_header(request))


APP = Starlette(
    routes=[
        Route("/echo", echo, methods=["POST"]),
        Route("/bytes/{size:int}", sized),
        Route("/chunked/{size:int}", chunked),
        Route("/empty", empty),
    ]
)


@pytest.fixture(scope="module")
def uvicorn_url() -> Iterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(APP, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn exited while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def client_for(
    url: str, *, timeout: float = 5.0, connect_timeout: float = 2.0, max_connections: int = 64
) -> PeerClient:
    return PeerClient(
        url, timeout=timeout, connect_timeout=connect_timeout, max_connections=max_connections
    )


# -- a raw server that does exactly what a test says -----------------------------------------


class After(enum.Enum):
    KEEP_OPEN = "keep_open"
    CLOSE = "close"  # close the connection right after writing the answer
    HANG = "hang"  # never answer; wait for the client to hang up


@dataclass(frozen=True)
class Answer:
    data: bytes = b""
    then: After = After.KEEP_OPEN


@dataclass(frozen=True)
class Arrival:
    connection: int  # index of the connection, in order of acceptance
    number: int  # index of the request on its connection
    path: str
    headers: dict[str, str]
    body: bytes


def ok(body: bytes = b"", *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in (f"content-length: {len(body)}", *extra))
    return f"HTTP/1.1 200 OK\r\n{head}\r\n".encode() + body


async def read_request(reader: asyncio.StreamReader, connection: int, number: int) -> Arrival:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *lines = head[:-4].split("\r\n")
    _method, path, _version = request_line.split(" ")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Arrival(connection, number, path, headers, body)


@dataclass
class RawPeer:
    """An HTTP/1.1 server on asyncio streams; ``answer`` decides what each request gets."""

    answer: Callable[[Arrival], Awaitable[Answer]]
    idle_timeout: float | None = None  # close a connection idle this long, as uvicorn does
    arrivals: list[Arrival] = field(default_factory=list)
    connections: int = 0
    ended: int = 0  # connections that are over, whoever closed them
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    url: str = field(init=False)
    _server: asyncio.Server = field(init=False)

    async def __aenter__(self) -> RawPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    async def wait_ended(self, count: int, *, within: float = 2.0) -> None:
        deadline = time.monotonic() + within
        while self.ended < count:
            assert time.monotonic() < deadline, f"{self.ended} of {count} connections ended"
            await asyncio.sleep(0.005)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index, self.connections = self.connections, self.connections + 1
        self._writers.append(writer)
        try:
            await self._requests(index, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client hung up, or the idle timeout passed
        finally:
            self.ended += 1
            writer.close()

    async def _requests(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for number in range(10**6):
            arrival = await asyncio.wait_for(read_request(reader, index, number), self.idle_timeout)
            self.arrivals.append(arrival)
            answer = await self.answer(arrival)
            writer.write(answer.data)
            await writer.drain()
            if answer.then is After.CLOSE:
                return
            if answer.then is After.HANG:
                await reader.read()  # returns when the client closes its end
                return


def answering(
    make: Callable[[Arrival], Answer], *, delay: float = 0.0
) -> Callable[[Arrival], Awaitable[Answer]]:
    async def answer(arrival: Arrival) -> Answer:
        await asyncio.sleep(delay)
        return make(arrival)

    return answer


def echo_id(arrival: Arrival) -> Answer:
    return Answer(ok(arrival.headers.get("x-id", "").encode()))


# -- round trips against uvicorn --------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 70_001, 10_000_000])
async def test_post_and_get_round_trip_exact_bytes(uvicorn_url: str, size: int) -> None:
    body = os.urandom(size)
    async with client_for(uvicorn_url) as client:
        echoed = await client.post("/echo", content=body)
        fetched = await client.get(f"/bytes/{size}")
    assert echoed.status_code == 200
    assert echoed.content == body
    assert fetched.content == pattern(size)
    assert fetched.headers["content-length"] == str(size)


async def test_response_headers_text_and_json(uvicorn_url: str) -> None:
    async with client_for(uvicorn_url) as client:
        response = await client.post("/echo", content=b'{"a": [1, 2]}')
    assert isinstance(response, PeerResponse)
    assert response.json() == {"a": [1, 2]}
    assert response.text == '{"a": [1, 2]}'
    assert all(name == name.lower() for name in response.headers)
    assert "x-client-port" in response.headers


async def test_chunked_answers_are_read_whole_and_keep_the_connection(uvicorn_url: str) -> None:
    async with client_for(uvicorn_url) as client:
        first = await client.get("/chunked/1000000")
        second = await client.get("/chunked/0")
        after = await client.get("/bytes/5")
    assert first.headers["transfer-encoding"] == "chunked"
    assert first.content == pattern(1_000_000)
    assert second.content == b""
    assert after.content == pattern(5)
    ports = {r.headers["x-client-port"] for r in (first, second, after)}
    assert len(ports) == 1


async def test_an_answer_without_content_keeps_the_connection(uvicorn_url: str) -> None:
    async with client_for(uvicorn_url) as client:
        nothing = await client.get("/empty")
        after = await client.get("/bytes/3")
    assert (nothing.status_code, nothing.content) == (204, b"")
    assert after.headers["x-client-port"] == nothing.headers["x-client-port"]


async def test_many_requests_share_one_keep_alive_connection(uvicorn_url: str) -> None:
    async with client_for(uvicorn_url) as client:
        responses = [await client.get("/bytes/10") for _ in range(100)]
    assert len({r.headers["x-client-port"] for r in responses}) == 1


async def test_an_answer_says_whether_its_connection_was_reused(uvicorn_url: str) -> None:
    """A fresh connection's time holds a handshake and TCP slow start: bandwidth
    estimates must be able to tell it from a warm one."""
    async with client_for(uvicorn_url) as client:
        first = await client.get("/bytes/10")
        second = await client.get("/bytes/10")
    assert first.reused_connection is False
    assert second.reused_connection is True
    assert second.headers["x-client-port"] == first.headers["x-client-port"]


async def test_fifty_concurrent_requests_through_eight_connections(uvicorn_url: str) -> None:
    bodies = [f"request {i} ".encode() * (i + 1) for i in range(50)]
    async with client_for(uvicorn_url, max_connections=8) as client:
        responses = await asyncio.gather(
            *(client.post("/echo?delay=0.01", content=body) for body in bodies)
        )
    assert [r.content for r in responses] == bodies
    assert len({r.headers["x-client-port"] for r in responses}) == 8


# -- the pool, counted on a raw server --------------------------------------------------------


async def test_raw_server_sees_one_connection_and_each_request_once() -> None:
    async with RawPeer(answering(echo_id)) as peer, client_for(peer.url) as client:
        answers = [(await client.get("/", headers={"x-id": str(i)})).content for i in range(50)]
    assert answers == [str(i).encode() for i in range(50)]
    assert peer.connections == 1
    assert [a.headers["x-id"] for a in peer.arrivals] == [str(i) for i in range(50)]


async def test_idle_connections_are_reused_last_in_first_out() -> None:
    async def answer(arrival: Arrival) -> Answer:
        await asyncio.sleep(0.05 if arrival.path == "/slow" else 0.0)
        return Answer(ok())

    async with RawPeer(answer) as peer, client_for(peer.url) as client:
        await asyncio.gather(client.get("/slow"), client.get("/fast"))
        await client.get("/next")
    slow, fast, following = (
        next(a for a in peer.arrivals if a.path == p) for p in ("/slow", "/fast", "/next")
    )
    assert slow.connection != fast.connection
    assert following.connection == slow.connection  # released last, so taken first


async def test_connections_idle_past_the_expiry_are_closed_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peer_client, "IDLE_EXPIRY_S", 0.05)
    async with RawPeer(answering(echo_id, delay=0.02)) as peer, client_for(peer.url) as client:
        await asyncio.gather(*(client.get("/") for _ in range(3)))
        await asyncio.sleep(0.1)
        await client.get("/")
        await peer.wait_ended(3)  # the client closed all three expired connections
    assert peer.connections == 4


async def test_connection_close_answers_are_honoured() -> None:
    def closing(arrival: Arrival) -> Answer:
        return Answer(ok(b"bye", "connection: close"), After.CLOSE)

    async with RawPeer(answering(closing)) as peer, client_for(peer.url) as client:
        answers = [(await client.get("/")).content for _ in range(5)]
    assert answers == [b"bye"] * 5
    assert (peer.connections, len(peer.arrivals)) == (5, 5)


async def test_an_answer_delimited_by_close_is_read_to_the_end() -> None:
    def until_close(arrival: Arrival) -> Answer:
        return Answer(b"HTTP/1.1 200 OK\r\n\r\nread me until the end", After.CLOSE)

    async with RawPeer(answering(until_close)) as peer, client_for(peer.url) as client:
        answers = [(await client.get("/")).content for _ in range(3)]
    assert answers == [b"read me until the end"] * 3
    assert peer.connections == 3


async def test_chunked_answer_with_extensions_and_trailers() -> None:
    chunked_answer = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: yes\r\n\r\n"
    )
    async with (
        RawPeer(answering(lambda _: Answer(chunked_answer))) as peer,
        client_for(peer.url) as client,
    ):
        answers = [(await client.get("/")).content for _ in range(3)]
    assert answers == [b"hello world"] * 3
    assert peer.connections == 1


async def test_a_peer_closing_idle_connections_costs_no_error_and_no_duplicate() -> None:
    async with (
        RawPeer(answering(echo_id), idle_timeout=0.03) as peer,
        client_for(peer.url) as client,
    ):
        answers = []
        for i in range(4):
            answers.append((await client.get("/", headers={"x-id": str(i)})).content)
            await asyncio.sleep(0.08)  # the peer closes the idle connection meanwhile
    assert answers == [b"0", b"1", b"2", b"3"]
    assert [a.headers["x-id"] for a in peer.arrivals] == ["0", "1", "2", "3"]
    assert peer.connections == 4


async def test_a_reused_connection_closed_on_arrival_is_retried_once_on_a_fresh_one() -> None:
    # Each connection serves one request, then is closed by the peer as the next arrives:
    # the race with a keep-alive timeout, made certain. The dropped request got no byte back.
    def first_only(arrival: Arrival) -> Answer:
        return echo_id(arrival) if arrival.number == 0 else Answer(then=After.CLOSE)

    async with RawPeer(answering(first_only)) as peer, client_for(peer.url) as client:
        answers = [(await client.get("/", headers={"x-id": str(i)})).content for i in range(6)]
    assert answers == [str(i).encode() for i in range(6)]
    handled = [a.headers["x-id"] for a in peer.arrivals if a.number == 0]
    assert handled == [str(i) for i in range(6)]  # each handled exactly once
    assert len(peer.arrivals) == 11  # requests 1..5 each arrived once more, never twice more


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    async with (
        RawPeer(answering(lambda _: Answer(then=After.CLOSE))) as peer,
        client_for(peer.url) as client,
    ):
        with pytest.raises(UpstreamError) as caught:
            await client.post("/", content=b"once")
    assert type(caught.value) is UpstreamUnansweredError  # the gateway may ask elsewhere
    assert "without answering" in caught.value.message
    assert peer.url in caught.value.message
    assert len(peer.arrivals) == 1


async def test_a_partial_answer_on_a_reused_connection_is_not_retried() -> None:
    def partial_second(arrival: Arrival) -> Answer:
        if arrival.number == 0:
            return Answer(ok())
        return Answer(b"HTTP/1.1 200 OK\r\ncontent-le", After.CLOSE)

    async with RawPeer(answering(partial_second)) as peer, client_for(peer.url) as client:
        await client.get("/first")
        with pytest.raises(UpstreamError, match="after 27 bytes"):
            await client.get("/second")
    assert [a.path for a in peer.arrivals] == ["/first", "/second"]


# -- failures map to the project's errors -----------------------------------------------------


async def test_connection_refused_is_an_upstream_error_naming_the_peer() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    async with client_for(url) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.get("/")
    assert type(caught.value) is UpstreamUnansweredError  # the gateway may ask elsewhere
    assert url in caught.value.message
    assert "ConnectionRefusedError" in caught.value.message
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_a_name_that_does_not_resolve_is_an_upstream_error() -> None:
    async with client_for("http://no-such-host.invalid:8200") as client:
        with pytest.raises(UpstreamError, match=r"no-such-host\.invalid"):
            await client.get("/")


async def test_a_connect_that_never_completes_times_out() -> None:
    # A listener whose accept queue is full drops new SYNs: the connect hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(2)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        async with client_for(f"http://127.0.0.1:{port}", connect_timeout=0.2) as client:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeoutError, match=r"connecting took over 0\.2 s"):
                await client.get("/")
        for filler in fillers:
            filler.close()
    assert 0.15 < time.monotonic() - started < 2.0


async def test_a_hung_peer_times_out_and_the_client_recovers() -> None:
    def hang_on_request(arrival: Arrival) -> Answer:
        return Answer(then=After.HANG) if arrival.path == "/hang" else Answer(ok(b"fine"))

    async with RawPeer(answering(hang_on_request)) as peer, client_for(peer.url) as client:
        assert (await client.get("/ok")).content == b"fine"
        started = time.monotonic()
        with pytest.raises(UpstreamTimeoutError, match=r"within 0\.3 s"):
            await client.get("/hang", timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2.0
        await peer.wait_ended(1)  # the hung connection was closed, not returned to the pool
        assert (await client.get("/ok")).content == b"fine"
    assert peer.connections == 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nthis line has no colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"x" * (READ_LIMIT + 10),
    ],
)
async def test_garbage_answers_are_upstream_errors(garbage: bytes) -> None:
    # Closed after the garbage, so a client that failed to notice would hang, not pass.
    async with (
        RawPeer(answering(lambda _: Answer(garbage, After.CLOSE))) as peer,
        client_for(peer.url) as client,
    ):
        with pytest.raises(UpstreamError) as caught:
            await client.get("/")
    assert type(caught.value) is UpstreamError
    assert peer.url in caught.value.message


async def test_aclose_closes_idle_and_busy_connections() -> None:
    def hang_on_request(arrival: Arrival) -> Answer:
        return Answer(then=After.HANG) if arrival.path == "/hang" else Answer(ok())

    async with RawPeer(answering(hang_on_request, delay=0.02)) as peer:
        client = client_for(peer.url)
        await asyncio.gather(*(client.get("/") for _ in range(4)))
        busy = asyncio.create_task(client.get("/hang"))
        while len(peer.arrivals) < 5:
            await asyncio.sleep(0.005)
        await client.aclose()
        await peer.wait_ended(peer.connections)
        with pytest.raises(UpstreamError, match="closed"):
            await busy
        with pytest.raises(UpstreamError, match="the client is closed"):
            await client.get("/")
    assert peer.connections == 4


def test_arguments_that_could_never_be_sent_are_refused_up_front() -> None:
    for url in ("ftp://cloud:8200", "cloud:8200", "http://:8200", "http://u:p@cloud/"):
        with pytest.raises(ValueError, match="base URL"):
            PeerClient(url, timeout=1, connect_timeout=1)
    with pytest.raises(ValueError, match="needs a TLS context"):
        PeerClient("https://cloud:8200", timeout=1, connect_timeout=1)
    with pytest.raises(ValueError, match="positive"):
        PeerClient("http://cloud", timeout=0, connect_timeout=1)
    with pytest.raises(ValueError, match="max_connections"):
        PeerClient("http://cloud", timeout=1, connect_timeout=1, max_connections=0)


@pytest.mark.parametrize(
    ("method", "path", "headers", "fragment"),
    [
        ("GET", "no-slash", {}, "path"),
        ("GET", "/a b", {}, "path"),
        ("get", "/", {}, "method"),
        ("GET", "/", {"x-evil": "a\r\nb"}, "header"),
        ("POST", "/", {"Content-Length": "5"}, "set by the client"),
    ],
)
async def test_requests_that_could_never_be_sent_are_refused_before_any_io(
    method: str, path: str, headers: dict[str, str], fragment: str
) -> None:
    async with client_for("http://127.0.0.1:9") as client:  # nothing listens: no I/O happens
        with pytest.raises(ValueError, match=fragment):
            await client.request(method, path, headers=headers)


async def test_a_base_url_prefix_is_prepended_to_every_path() -> None:
    async with (
        RawPeer(answering(lambda a: Answer(ok(a.path.encode())))) as peer,
        client_for(peer.url + "/prefix/") as client,
    ):
        assert (await client.get("/v1/probe?x=1")).content == b"/prefix/v1/probe?x=1"
