"""The edge partition service: runs the head of one cut and sends the cut tensor to
its cloud peer over a pool of keep-alive connections (``neukonfig.peer_client``).

    POST /v1/infer      wire frame of the model inputs -> wire frame of the model outputs
    GET  /v1/transfers  transfers done and in flight, and the kernel's view of the link
    GET  /health/live, /health/ready, /v1/partition, /metrics

Cut N (all-edge) never touches the network; cut 0 (all-cloud) forwards the raw input.
When the cloud partition cannot answer (unreachable, timed out, 5xx), the edge runs the
tail itself (``LocalTail``, loaded after the head's first request) and marks the answer with
``x-neukonfig-fallback``; a ``CloudBreaker`` then keeps requests off the failed cloud
for ``cloud_retry_s`` before one request tries it again. A cloud call far later than
usual is cancelled and finished here; before this pipeline knows what usual is, a call
that outlasts the local tail's time is raced by it (``hedge_deadline``).

Each response carries the stage timings in ``x-neukonfig-*-seconds`` headers, so the
gateway can export them without a second round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import Response

from edge_service.link import LinkMonitor
from edge_service.settings import EdgePartitionSettings
from models.runtime import Role
from neukonfig import wire
from neukonfig.codecs import NONE, Codec
from neukonfig.errors import NotReadyError, UpstreamError, UpstreamTimeoutError
from neukonfig.manifest import CutKind
from neukonfig.metrics import Metrics, Stage
from neukonfig.peer_client import PeerClient
from neukonfig.protocol import (
    ARRIVAL_TAIL_HEADER,
    CLOUD_SECONDS_HEADER,
    COMPUTE_SECONDS_HEADER,
    EDGE_SECONDS_HEADER,
    FALLBACK_HEADER,
    INFER_PATH,
    TRANSFER_BYTES_HEADER,
    TRANSFER_SECONDS_HEADER,
    TRANSFERS_PATH,
    parse_arrival_tail,
)
from neukonfig.service import (
    add_metrics_route,
    add_plain_route,
    guard_internal_routes,
    install_error_handlers,
    internal_headers,
    read_body,
)
from neukonfig.tls import CLOUD_NAME, TlsDir
from serving import hosting
from serving.compute_queue import ComputeQueue
from serving.memory_limit import memory_limit_bytes
from serving.partition_host import (
    LoadState,
    PartitionHost,
    decode_inputs,
    health_router,
    start_loading,
)

_FRAME_HEADERS = {"content-type": wire.CONTENT_TYPE}
# The link counts as backed up when a frame would take this many times its normal time,
# and at least this much longer.
BACKLOG_FACTOR = 2.0
BACKLOG_MIN_S = 0.05
# A cloud call this many times later than usual (and at least HEDGE_MIN_S) is finished
# on the edge instead: a hung cloud or a collapsed link costs this, not a timeout.
HEDGE_FACTOR = 4.0
HEDGE_MIN_S = 0.3
log = logging.getLogger("neukonfig.edge")


class CloudDownError(UpstreamError):
    """The cloud partition gave no usable answer: unreachable, timed out or a 5xx.
    (A 4xx means this request was wrong, which another try would not fix.)"""


class CloudBreaker:
    """After a cloud failure, skip the cloud for ``retry_s``; then let one request try it
    while the others keep going to the fallback, so a hung cloud costs one timeout per
    retry period instead of one per request."""

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self._down_until: float | None = None
        self._trial_running = False

    def skip_cloud(self) -> bool:
        if self._down_until is None:
            return False
        if time.monotonic() < self._down_until or self._trial_running:
            return True
        self._trial_running = True  # this request is the trial
        return False

    def failed(self) -> None:
        if self._down_until is None:
            log.warning("cloud partition failing: answering with the local tail")
        self._down_until = time.monotonic() + self.retry_s
        self._trial_running = False

    def succeeded(self) -> None:
        if self._down_until is not None:
            log.info("cloud partition answering again")
        self._down_until = None
        self._trial_running = False


class LocalReason(str, enum.Enum):
    """Why the edge answered with its own copy of the tail."""

    CLOUD_DOWN = "cloud-down"  # the cloud partition gave no usable answer
    CLOUD_LATE = "cloud-late"  # far later than usual: a hung cloud or a collapsed link
    LINK_BACKLOG = "link-backlog"  # the link was backed up: finishing here was sooner


class LocalTail:
    """This cut's tail on the edge: for when the cloud cannot answer, and for when the
    link is so backed up that finishing here is sooner. Preloaded after the head (or
    loaded on the first cloud failure); with shared weights its weights stay mapped from
    weights.bin. It takes turns with the head: one process, one share of the device."""

    def __init__(self, settings: EdgePartitionSettings, queue: ComputeQueue) -> None:
        self.host = PartitionHost(
            directory=settings.partition_dir,
            cut=settings.head_cut,
            role=Role.CLOUD,
            threads=settings.threads,
            slowdown=settings.slowdown,
            share_weights=settings.share_weights,
            queue=queue,
            idle_priority_load=True,  # loaded while the head serves
            shared_arena=settings.shared_arena,
        )
        self._loading: asyncio.Task[None] | None = None

    def load(self) -> asyncio.Task[None]:
        if self._loading is None:
            self._loading = asyncio.create_task(self.host.load(), name="load-local-tail")
        return self._loading

    @property
    def state(self) -> str:
        """``unloaded`` until something asks for it, then the load's state."""
        return "unloaded" if self._loading is None else self.host.state.value

    @property
    def expected_s(self) -> float | None:
        """One run's time here, once loaded (None before: not a choice yet)."""
        if self.host.state is not LoadState.READY or self.host.warm_run_seconds is None:
            return None
        return self.host.warm_run_seconds * self.host.slowdown

    async def run(self, frame: bytes) -> tuple[bytes, float]:
        await asyncio.shield(self.load())
        outputs, seconds = await self.host.run(decode_inputs(frame, self.host))
        return wire.encode(outputs), seconds


@dataclass(frozen=True)
class Hedge:
    """When a cloud call counts as late, and what then: cancel it and finish here, or
    (``race``) finish here too and answer with whichever comes first."""

    after_s: float
    race: bool = False


class CloudTimes:
    """A running average of the cloud's compute time, for predicting a cloud call."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def record(self, seconds: float) -> None:
        self.seconds += 0.2 * (seconds - self.seconds)


def create_app(settings: EdgePartitionSettings) -> FastAPI:
    queue = ComputeQueue(max_wait_s=settings.max_queue_wait_s)
    host = PartitionHost(
        directory=settings.partition_dir,
        cut=settings.head_cut,
        role=Role.EDGE,
        threads=settings.threads,
        slowdown=settings.slowdown,
        share_weights=settings.share_weights,
        queue=queue,
        idle_priority_load=settings.idle_priority_load,
        shared_arena=settings.shared_arena,
    )
    metrics = Metrics(service="edge")
    cloud = (
        PeerClient(
            settings.cloud_url,
            timeout=settings.cloud_timeout_s,
            connect_timeout=settings.connect_timeout_s,
            default_headers=internal_headers(settings.internal_token),
            tls=TlsDir(settings.tls_dir).client_context() if settings.tls_dir else None,
            server_hostname=CLOUD_NAME,
        )
        if settings.cloud_url
        else None
    )
    link = LinkMonitor(cloud, kernel_evidence=settings.kernel_link_evidence)
    fallback = LocalTail(settings, queue) if settings.fallback_local_tail and cloud else None
    breaker = CloudBreaker(settings.cloud_retry_s)
    codec = Codec.parse(settings.codec)
    cloud_times = CloudTimes()
    # Cloud calls that lost a race to the local tail and are left to finish (strong
    # references: the event loop keeps only weak ones to tasks).
    outliving: set[asyncio.Task[tuple[bytes, float, float]]] = set()
    serving = asyncio.Event()  # set by the first inference request

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loading = start_loading(host)
        preloading = asyncio.create_task(preload_local_tail(loading))
        yield
        loading.cancel()
        preloading.cancel()
        for call in list(outliving):
            call.cancel()
        if cloud is not None:
            await cloud.aclose()

    async def preload_local_tail(head: asyncio.Task[None]) -> None:
        """After the head is ready (readiness comes first) and has had its first request,
        so that a backed-up link can be answered here soon after: a warm standby that
        serves nothing keeps only its head in memory (MobileNetV2's tails cost two
        standbys about 20 MB each). Loading takes a fraction of a second after a flip."""
        await head
        await serving.wait()
        if fallback is not None and settings.preload_local_tail:
            await fallback.load()

    app = FastAPI(title="neukonfig edge partition", lifespan=lifespan)
    install_error_handlers(app)
    guard_internal_routes(app, settings.internal_token)

    async def call_cloud(frame: bytes) -> tuple[bytes, float, float]:
        if cloud is None:
            raise NotReadyError("no cloud_url configured for a cut that needs the cloud")
        started = time.perf_counter()
        token = link.begin(len(frame))
        delivered, warm, transfer_seconds, cloud_seconds = False, False, 0.0, 0.0
        tail: tuple[int, float] = (0, 0.0)
        try:
            try:
                response = await cloud.post(INFER_PATH, content=frame, headers=_FRAME_HEADERS)
            except UpstreamTimeoutError as error:
                raise CloudDownError(f"cloud partition timed out: {error.message}") from error
            except UpstreamError as error:
                raise CloudDownError(f"cloud partition unreachable: {error.message}") from error
            round_trip = time.perf_counter() - started
            if response.status_code >= 500:
                raise CloudDownError(f"cloud partition answered {response.status_code}")
            if response.status_code != 200:
                raise UpstreamError(
                    f"cloud partition answered {response.status_code}: {response.text}"
                )
            cloud_seconds = float(response.headers.get(COMPUTE_SECONDS_HEADER, 0.0))
            transfer_seconds = max(round_trip - cloud_seconds, 0.0)
            tail = parse_arrival_tail(response.headers.get(ARRIVAL_TAIL_HEADER))
            delivered, warm = True, response.reused_connection
        finally:
            link.end(
                token,
                seconds=transfer_seconds,
                cloud_seconds=cloud_seconds,
                delivered=delivered,
                warm=warm,
                tail=tail,
            )
        cloud_times.record(cloud_seconds)
        return response.content, transfer_seconds, cloud_seconds

    def hedge_deadline() -> Hedge | None:
        """How long a cloud call may take before the edge finishes the request itself.

        With a normal crossing known: a few times it plus the cloud's compute, and never
        sooner than the local tail takes; a call that late is lost (cancelled). Before
        one is known (a new pipeline, whose first transfers may meet a collapsed link or
        a hung cloud): as long as the local tail takes, then race it, so that no request
        takes more than about twice the quicker of the two (the ski-rental bound). The
        local tail loads after the head's first request: until it has, its time counts
        as 0 and finishing here waits for the load. None when there is no local tail."""
        if fallback is None:
            return None
        local = fallback.expected_s or 0.0
        normal = link.normal_seconds()
        if normal is None:
            return Hedge(after_s=max(HEDGE_MIN_S, local + queue.expected_wait_s()), race=True)
        usual = normal + cloud_times.seconds
        return Hedge(after_s=max(HEDGE_FACTOR * usual, HEDGE_MIN_S, local))

    def backed_up(size: int) -> bool:
        """Is the link far slower than normal now, and would this frame finish sooner on
        the edge? (A link at its normal speed is the planner's business, not this.)"""
        if fallback is None:
            return False
        local, through_link = fallback.expected_s, link.link_seconds(size)
        normal = link.normal_seconds()
        if local is None or through_link is None or normal is None:
            return False
        if through_link < max(normal * BACKLOG_FACTOR, normal + BACKLOG_MIN_S):
            return False
        local += queue.expected_wait_s()
        return through_link + cloud_times.seconds > local * settings.local_margin

    async def serve(body: bytes) -> Response:
        feeds = decode_inputs(body, host)
        intermediate, edge_seconds = await host.run(feeds)
        metrics.observe_stage(Stage.EDGE_COMPUTE, edge_seconds)
        headers = {EDGE_SECONDS_HEADER: f"{edge_seconds:.9f}"}
        if host.partition.cut.kind is CutKind.ALL_EDGE:
            return Response(
                wire.encode(intermediate), media_type=wire.CONTENT_TYPE, headers=headers
            )
        # All-cloud with no codec: the gateway's frame is already what the cloud needs.
        forward = host.partition.session is None and codec == NONE
        frame = body if forward else wire.encode(intermediate, codec)
        if fallback is not None and breaker.skip_cloud():
            return await answer_locally(frame, headers, LocalReason.CLOUD_DOWN)
        if backed_up(len(frame)):
            return await answer_locally(frame, headers, LocalReason.LINK_BACKLOG)
        cloud_call = asyncio.create_task(call_cloud(frame))
        hedge = hedge_deadline()
        if hedge is not None:
            done, _ = await asyncio.wait({cloud_call}, timeout=hedge.after_s)
            if not done and hedge.race:
                local = await race_locally(cloud_call, frame, headers)
                if local is not None:
                    return local
            elif not done:
                # Far later than the link and cloud normally take: finish here. Cancelling
                # closes the connection, so its bytes stop crowding the link too.
                cloud_call.cancel()
                await asyncio.gather(cloud_call, return_exceptions=True)
                breaker.failed()
                return await answer_locally(frame, headers, LocalReason.CLOUD_LATE)
        try:
            outputs, transfer_seconds, cloud_seconds = await cloud_call
        except CloudDownError:
            if fallback is None:
                raise
            breaker.failed()
            return await answer_locally(frame, headers, LocalReason.CLOUD_DOWN)
        breaker.succeeded()
        metrics.observe_stage(Stage.TRANSFER, transfer_seconds)
        metrics.transfer_bytes.inc(len(frame))
        headers |= {
            TRANSFER_SECONDS_HEADER: f"{transfer_seconds:.9f}",
            CLOUD_SECONDS_HEADER: f"{cloud_seconds:.9f}",
            TRANSFER_BYTES_HEADER: str(len(frame)),
        }
        # The cloud's frame already holds the model outputs: pass it on without re-encoding.
        return Response(outputs, media_type=wire.CONTENT_TYPE, headers=headers)

    async def race_locally(
        cloud_call: asyncio.Task[tuple[bytes, float, float]],
        frame: bytes,
        headers: dict[str, str],
    ) -> Response | None:
        """Run the tail here beside the late cloud call; the local answer if it comes
        first (None: the cloud's came first, or the tail failed: wait for the cloud).
        The cloud call is left to finish: its time is what teaches this pipeline the
        link's normal crossing, and its outcome is what opens or closes the breaker."""
        # Its own headers: when both finish at once, the cloud's answer is the one sent.
        local = asyncio.create_task(answer_locally(frame, dict(headers), LocalReason.CLOUD_LATE))
        done, _ = await asyncio.wait({cloud_call, local}, return_when=asyncio.FIRST_COMPLETED)
        if cloud_call in done:
            local.cancel()
            return None
        if local.exception() is not None:
            log.warning("local tail failed, waiting for the cloud: %s", local.exception())
            return None
        outliving.add(cloud_call)
        cloud_call.add_done_callback(settle_outlived_call)
        return local.result()

    def settle_outlived_call(call: asyncio.Task[tuple[bytes, float, float]]) -> None:
        outliving.discard(call)
        if call.cancelled():
            return
        error = call.exception()
        if error is None:
            breaker.succeeded()
        elif isinstance(error, CloudDownError):
            breaker.failed()

    async def answer_locally(
        frame: bytes, headers: dict[str, str], reason: LocalReason
    ) -> Response:
        assert fallback is not None
        outputs, tail_seconds = await fallback.run(frame)
        metrics.fallbacks.labels(reason.value).inc()
        headers |= {
            CLOUD_SECONDS_HEADER: f"{tail_seconds:.9f}",
            FALLBACK_HEADER: f"local-tail; reason={reason.value}",
        }
        return Response(outputs, media_type=wire.CONTENT_TYPE, headers=headers)

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        serving.set()
        try:
            queue.admit("the edge partition")
            response = await serve(await read_body(request, limit=settings.max_body_bytes))
        except Exception as error:
            metrics.count_request(getattr(error, "status_code", 500))
            raise
        metrics.count_request(200)
        metrics.observe_stage(Stage.END_TO_END, time.perf_counter() - started)
        return response

    # Before every other route: a request is matched against the routes in order, and
    # each one ahead costs ~2-6 µs (12 µs for /metrics and health, measured in-process).
    add_plain_route(app, INFER_PATH, infer, methods=["POST"])
    add_metrics_route(app, metrics)

    # The device's memory, for the controller's budget: read once, it does not change.
    memory_limit = memory_limit_bytes()

    def tail_info() -> dict[str, object]:
        """What ``/v1/partition`` adds for an edge: its codec, its local tail, and the
        memory limit it runs under (None: none)."""
        shown: dict[str, object] = {"codec": codec.name, "memory_limit_bytes": memory_limit}
        if fallback is None:
            return shown | {"local_tail": None}
        tail = {"state": fallback.state, "expected_s": fallback.expected_s}
        return shown | {"local_tail": tail}

    app.include_router(health_router(host, details=tail_info))

    @app.get(TRANSFERS_PATH)
    async def link_state(after: int = 0) -> dict[str, object]:
        """Completed transfers after ``after``, those in flight, and the kernel's reading.

        On the event loop, as every other use of the link monitor: its deques and dicts
        are not for threads (as a plain ``def`` route this ran in a worker thread, beside
        a request's ``link_seconds``, and failed that request with "deque mutated during
        iteration"). A snapshot is a few TCP_INFO reads and a list: microseconds."""
        return link.snapshot(after)

    return app


def create_host_app(settings: EdgePartitionSettings) -> FastAPI:
    """A host of heads (``serving.hosting``): each hosted head is this module's app."""

    def build(values: dict[str, str]) -> FastAPI:
        hosted = {"hosting": False, "idle_priority_load": True, "shared_arena": True}
        return create_app(EdgePartitionSettings(**{**values, **hosted}))

    return hosting.create_host_app(
        title="neukonfig edge partition host", build=build, internal_token=settings.internal_token
    )
