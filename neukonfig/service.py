"""What every neukonfig FastAPI service shares: errors as ``{"error": ...}``, bounded
body reading, token checks for the control plane, ``/metrics``, and running uvicorn.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from neukonfig.errors import (
    BodyTimeoutError,
    NeukonfigError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from neukonfig.metrics import CONTENT_TYPE_LATEST, Metrics
from neukonfig.protocol import INTERNAL_TOKEN_HEADER, LIVE_PATH, METRICS_PATH, READY_PATH

log = logging.getLogger("neukonfig")
T = TypeVar("T")


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to ``{"error": ...}``: ours keep their status, validation is 400."""

    @app.exception_handler(NeukonfigError)
    async def _ours(_request: Request, error: NeukonfigError) -> JSONResponse:
        response = error_response(error.status_code, error.message)
        if isinstance(error, OverloadedError):
            response.headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = first.get("msg", "invalid request")
        return error_response(400, f"{where}: {message}" if where else message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(error).__name__}")


async def read_body(
    request: Request,
    *,
    limit: int,
    timeout: float | None = None,
    arrivals: list[tuple[float, int]] | None = None,
) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before buffering it,
    and (408) a body that takes longer than ``timeout`` seconds to arrive: a client that
    drips its body must not hold a connection and its buffer forever. ``arrivals``, when
    given, gets (perf_counter time, bytes so far) as each chunk arrives."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over the {limit}-byte limit")
    try:
        return await asyncio.wait_for(_read_limited(request, limit, arrivals), timeout)
    except asyncio.TimeoutError:
        raise BodyTimeoutError(f"the request body took longer than {timeout:g} s") from None


async def _read_limited(
    request: Request, limit: int, arrivals: list[tuple[float, int]] | None
) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
        if arrivals is not None and chunk:
            arrivals.append((time.perf_counter(), size))
    return b"".join(chunks)


class InternalTokenGuard:
    """ASGI middleware: every path but health and /metrics needs the internal token in
    ``x-neukonfig-internal-token``, so a partition service reachable on a network answers
    only the gateway, its edge peer and the controller."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        open_paths: frozenset[str],
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = open_paths
        self.open_prefixes = open_prefixes
        self.header = INTERNAL_TOKEN_HEADER.encode()

    def _open(self, scope: Scope) -> bool:
        # Mounted under a partition host, the path still carries the mount's prefix.
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._open(scope):
            given = next((v for k, v in scope["headers"] if k == self.header), b"")
            if not hmac.compare_digest(given, self.token):
                message = f"this service answers only requests carrying {INTERNAL_TOKEN_HEADER}"
                await error_response(401, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard_internal_routes(
    app: FastAPI, token: SecretStr | None, *, open_prefixes: tuple[str, ...] = ()
) -> None:
    """Require the internal token when one is configured; without one the service relies
    on its network binding (loopback by default). ``open_prefixes``: paths some mounted
    app guards itself."""
    if token is not None:
        open_paths = frozenset({LIVE_PATH, READY_PATH, METRICS_PATH})
        app.add_middleware(
            InternalTokenGuard,
            token=token.get_secret_value(),
            open_paths=open_paths,
            open_prefixes=open_prefixes,
        )


def internal_headers(token: SecretStr | None) -> dict[str, str]:
    return {INTERNAL_TOKEN_HEADER: token.get_secret_value()} if token is not None else {}


def bearer_token_check(expected: Callable[[], str | None]) -> Callable[[Request], None]:
    """A FastAPI dependency: the request must carry ``Authorization: Bearer <token>``."""

    def check(request: Request) -> None:
        token = expected()
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest: the time taken must not reveal how much of the token matched.
        if (
            not token
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(given.strip().encode(), token.encode())
        ):
            raise UnauthorizedError("this endpoint needs 'Authorization: Bearer <admin token>'")

    return check


def add_plain_route(
    router: FastAPI | APIRouter,
    path: str,
    endpoint: Callable[[Request], Awaitable[Response]],
    *,
    methods: list[str],
) -> None:
    """Serve ``endpoint(request)`` as a plain Starlette route: for the inference hot path only.

    FastAPI's parameter solving and response wrapping cost about 35 µs a request (the cloud's
    /v1/infer in-process: 150 µs as an APIRoute, 113 µs as a Route), paid on every hop, and
    these endpoints read a raw body with nothing to validate. They stay out of the OpenAPI
    schema; their errors still go through ``install_error_handlers``.
    """
    router.add_route(path, endpoint, methods=methods, include_in_schema=False)


def add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    @app.get(METRICS_PATH, include_in_schema=False)
    def _metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


HEADER_TIMEOUT_S = 10.0


def run_uvicorn(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str = "warning",
    header_timeout_s: float = HEADER_TIMEOUT_S,
    **tls: Any,
) -> None:
    """Serve on host:port, or on the listening socket a launcher handed over (no port race),
    closing connections whose request head does not arrive within ``header_timeout_s``.
    ``tls``: uvicorn's ``ssl_*`` options (``neukonfig.tls.TlsDir.server_options``)."""
    import os

    import uvicorn

    options: dict[str, Any] = {"log_level": log_level, "access_log": False, **tls}
    protocol = header_timeout_protocol(header_timeout_s)
    if protocol is not None:
        options["http"] = protocol
    inherited = os.environ.get("NEUKONFIG_LISTEN_FD")
    if inherited:
        uvicorn.run(app, fd=int(inherited), **options)
    else:
        uvicorn.run(app, host=host, port=port, **options)


def header_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol, plus a bound on how long a request head may take.

    uvicorn closes idle keep-alive connections but waits forever for a request line and
    headers that trickle in a byte at a time (slowloris), each such connection holding a
    slot. This closes the connection when a head is not complete ``timeout_s`` after the
    connection opened or the request began. None where httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class HeadTimeoutProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._cancel_head_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(timeout_s, self._head_too_slow)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutProtocol


def settings_or_exit(factory: Callable[[], T]) -> T:
    """Build settings from the environment, or exit with one line naming what is wrong."""
    try:
        return factory()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in error.errors()
        )
        raise SystemExit(f"neukonfig: invalid settings: {problems}") from None
