"""The cloud partition service: runs the tail of one cut.

POST /v1/infer   wire frame of the cut tensor -> wire frame of the model outputs
POST /v1/probe   N bytes -> how many arrived, how long reading them took, and the second
                 half's bytes over its arrival time (bandwidth probes)
GET  /health/live, /health/ready, /v1/partition, /metrics
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import Response

from cloud_service.settings import CloudSettings
from models.runtime import Role
from neukonfig import wire
from neukonfig.metrics import Metrics, Stage
from neukonfig.protocol import (
    ARRIVAL_TAIL_HEADER,
    COMPUTE_SECONDS_HEADER,
    INFER_PATH,
    PROBE_PATH,
)
from neukonfig.service import (
    add_metrics_route,
    add_plain_route,
    guard_internal_routes,
    install_error_handlers,
    read_body,
)
from serving import hosting
from serving.bandwidth import arrival_tail
from serving.compute_queue import ComputeQueue
from serving.partition_host import PartitionHost, decode_inputs, health_router, start_loading


def create_app(settings: CloudSettings) -> FastAPI:
    host = PartitionHost(
        directory=settings.partition_dir,
        cut=settings.cut,
        role=Role.CLOUD,
        threads=settings.threads,
        queue=ComputeQueue(max_wait_s=settings.max_queue_wait_s),
        idle_priority_load=settings.idle_priority_load,
        shared_arena=settings.shared_arena,
    )
    metrics = Metrics(service="cloud")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loading = start_loading(host)
        yield
        loading.cancel()

    app = FastAPI(title="neukonfig cloud partition", lifespan=lifespan)
    install_error_handlers(app)
    guard_internal_routes(app, settings.internal_token)

    async def infer(request: Request) -> Response:
        try:
            host.queue.admit("the cloud partition")
            arrivals: list[tuple[float, int]] = []
            body = await read_body(request, limit=settings.max_body_bytes, arrivals=arrivals)
            # From here on the link is done: the edge takes this time out of its transfer
            # time, so a wait for a turn here must count, or it would read as a slow link.
            arrived = time.perf_counter()
            outputs, _ = await host.run(decode_inputs(body, host))
            frame = wire.encode(outputs)
            seconds = time.perf_counter() - arrived
        except Exception as error:
            metrics.count_request(getattr(error, "status_code", 500))
            raise
        metrics.observe_stage(Stage.CLOUD_COMPUTE, seconds)
        metrics.count_request(200)
        tail_bytes, tail_seconds = arrival_tail(arrivals)
        headers = {
            COMPUTE_SECONDS_HEADER: f"{seconds:.9f}",
            ARRIVAL_TAIL_HEADER: f"{tail_bytes} {tail_seconds:.9f}",
        }
        return Response(frame, media_type=wire.CONTENT_TYPE, headers=headers)

    # Before every other route: a request is matched against the routes in order, and
    # each one ahead costs ~2-6 µs (12 µs for /metrics and health, measured in-process).
    add_plain_route(app, INFER_PATH, infer, methods=["POST"])
    add_metrics_route(app, metrics)
    app.include_router(health_router(host))

    @app.post(PROBE_PATH)
    async def probe(request: Request) -> dict[str, float | int]:
        started = time.perf_counter()
        arrivals: list[tuple[float, int]] = []
        body = await read_body(request, limit=settings.max_body_bytes, arrivals=arrivals)
        tail_bytes, tail_seconds = arrival_tail(arrivals)
        return {
            "received_bytes": len(body),
            "read_seconds": time.perf_counter() - started,
            "tail_bytes": tail_bytes,
            "tail_seconds": tail_seconds,
        }

    return app


def create_host_app(settings: CloudSettings) -> FastAPI:
    """A host of tails (``serving.hosting``): each hosted tail is this module's app."""

    def build(values: dict[str, str]) -> FastAPI:
        hosted = {"hosting": False, "idle_priority_load": True, "shared_arena": True}
        return create_app(CloudSettings(**{**values, **hosted}))

    return hosting.create_host_app(
        title="neukonfig cloud partition host", build=build, internal_token=settings.internal_token
    )
