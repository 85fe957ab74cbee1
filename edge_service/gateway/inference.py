"""OIP v2 inference, metadata and health routes of the gateway.

Paths are the Open Inference Protocol's, copied exactly. A request reads the routing
pointer once (``RoutingTable.acquire``), is forwarded to that pipeline's edge
partition as one wire frame, and is answered in the form the client asked for.
"""

from __future__ import annotations

import asyncio
import functools
import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

import neukonfig
from edge_service.gateway.oip import (
    HEADER_LENGTH,
    InferRequest,
    TensorMetadata,
    datatype_of,
    encode_infer_response,
    model_metadata,
    parse_header_length,
    parse_infer_request,
)
from edge_service.gateway.routing import Pipeline, RoutingTable
from edge_service.settings import GatewaySettings
from neukonfig import wire
from neukonfig.errors import (
    NeukonfigError,
    OverloadedError,
    UnknownModelError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnansweredError,
)
from neukonfig.manifest import Manifest, TensorSpec
from neukonfig.metrics import Metrics, Stage
from neukonfig.peer_client import PeerResponse
from neukonfig.protocol import (
    CLOUD_SECONDS_HEADER,
    CODEC_HEADER,
    CUT_HEADER,
    EDGE_SECONDS_HEADER,
    FALLBACK_HEADER,
    INFER_PATH,
    PIPELINE_HEADER,
    TRANSFER_SECONDS_HEADER,
)
from neukonfig.service import add_plain_route, read_body

MODEL_VERSION = "1"
_FRAME_HEADERS = {"content-type": wire.CONTENT_TYPE}
_STAGE_HEADERS = {
    Stage.EDGE_COMPUTE: EDGE_SECONDS_HEADER,
    Stage.TRANSFER: TRANSFER_SECONDS_HEADER,
    Stage.CLOUD_COMPUTE: CLOUD_SECONDS_HEADER,
}


def tensor_metadata(manifest: Manifest) -> tuple[list[TensorMetadata], list[TensorMetadata]]:
    """The full model's inputs and outputs, whatever the current cut (-1 = dynamic dim)."""

    def convert(spec: TensorSpec) -> TensorMetadata:
        shape = tuple(d if isinstance(d, int) else -1 for d in (spec.shape or []))
        datatype = datatype_of(np.dtype(spec.dtype or "float32"))
        return TensorMetadata(name=spec.name, datatype=datatype, shape=shape)

    return [convert(t) for t in manifest.model.inputs], [convert(t) for t in manifest.model.outputs]


def inference_router(
    table: RoutingTable, settings: GatewaySettings, manifest: Manifest, metrics: Metrics
) -> APIRouter:
    router = APIRouter()
    inputs, outputs = tensor_metadata(manifest)
    name = settings.model_name

    def require_model(model_name: str, version: str | None = None) -> None:
        if model_name != name:
            raise UnknownModelError(f"unknown model {model_name!r}; this gateway serves {name!r}")
        if version is not None and version != MODEL_VERSION:
            raise UnknownModelError(f"model {name!r} has no version {version!r}")

    def ready_response() -> JSONResponse:
        ready = table.active is not None
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def parse(request: Request) -> InferRequest:
        body = await read_body(
            request, limit=settings.max_body_bytes, timeout=settings.body_timeout_s
        )
        header_length = parse_header_length(request.headers.get(HEADER_LENGTH))
        parse_body = functools.partial(
            parse_infer_request,
            body,
            header_length=header_length,
            inputs=inputs,
            outputs=outputs,
            max_elements=settings.max_elements,
        )
        json_bytes = len(body) if header_length is None else header_length
        if json_bytes > settings.parse_in_thread_bytes:
            return await asyncio.to_thread(parse_body)
        return parse_body()

    async def infer(model_name: str, request: Request, version: str | None) -> Response:
        started = time.perf_counter()
        try:
            require_model(model_name, version)
            parsed = await parse(request)
            response, pipeline, fallback = await _forward(table, parsed, settings, metrics)
        except NeukonfigError as error:
            metrics.count_request(error.status_code)
            raise
        body, headers = encode_infer_response(
            model_name=name, model_version=MODEL_VERSION, request=parsed, outputs=response
        )
        metrics.count_request(200)
        metrics.observe_stage(Stage.END_TO_END, time.perf_counter() - started)
        # Which pipeline answered: lets probe clients see when traffic moved.
        headers[PIPELINE_HEADER] = pipeline.id
        headers[CUT_HEADER] = str(pipeline.cut)
        if pipeline.codec != "none":
            headers[CODEC_HEADER] = pipeline.codec
        if fallback:
            headers[FALLBACK_HEADER] = fallback
        return Response(body, headers=headers)

    async def infer_latest(request: Request) -> Response:
        return await infer(request.path_params["model_name"], request, None)

    async def infer_version(request: Request) -> Response:
        params = request.path_params
        return await infer(params["model_name"], request, params["version"])

    # Before every other route: a request is matched against the routes in order, and
    # each one ahead costs ~2-6 µs (12 µs for /metrics and health, measured in-process).
    add_plain_route(router, "/v2/models/{model_name}/infer", infer_latest, methods=["POST"])
    add_plain_route(
        router, "/v2/models/{model_name}/versions/{version}/infer", infer_version, methods=["POST"]
    )

    @router.get("/v2")
    def server_metadata() -> dict[str, object]:
        return {
            "name": "neukonfig",
            "version": neukonfig.__version__,
            "extensions": ["binary_tensor_data"],
        }

    @router.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready")
    def server_ready() -> JSONResponse:
        return ready_response()

    @router.get("/v2/models/{model_name}")
    def metadata(model_name: str) -> dict[str, object]:
        require_model(model_name)
        return model_metadata(
            name=name,
            versions=[MODEL_VERSION],
            platform="onnxruntime_onnx",
            inputs=inputs,
            outputs=outputs,
        )

    @router.get("/v2/models/{model_name}/ready")
    def model_ready(model_name: str) -> JSONResponse:
        require_model(model_name)
        return ready_response()

    return router


async def _forward(
    table: RoutingTable, parsed: InferRequest, settings: GatewaySettings, metrics: Metrics
) -> tuple[dict[str, np.ndarray], Pipeline, str | None]:
    """The model outputs, the pipeline that answered, and its fallback mark if any."""
    frame = wire.encode(parsed.inputs)
    table.admit(max_in_flight=settings.max_in_flight)
    response, pipeline = await _post_with_one_retry(table, frame, settings)
    for stage, header in _STAGE_HEADERS.items():
        if header in response.headers:
            metrics.observe_stage(stage, float(response.headers[header]))
    try:
        return wire.decode(response.content), pipeline, response.headers.get(FALLBACK_HEADER)
    except wire.WireFormatError as error:
        raise UpstreamError(f"pipeline {pipeline.id} sent a malformed answer: {error}") from error


async def _post_with_one_retry(
    table: RoutingTable, frame: bytes, settings: GatewaySettings
) -> tuple[PeerResponse, Pipeline]:
    """Post to the active pipeline; if its edge partition failed before any byte of an
    answer (dead, restarting), once more to another ready pipeline (``acquire_other``).
    The first may have run the request: harmless for inference, see
    ``UpstreamUnansweredError``."""
    pipeline = await table.acquire(wait_timeout=settings.pause_wait_timeout_s)
    try:
        return await _post(pipeline, frame), pipeline
    except UpstreamUnansweredError:
        other = table.acquire_other(pipeline)
        if other is None:
            raise
    finally:
        table.release(pipeline)
    try:
        return await _post(other, frame), other
    finally:
        table.release(other)


async def _post(pipeline: Pipeline, frame: bytes) -> PeerResponse:
    try:
        response = await pipeline.client.post(INFER_PATH, content=frame, headers=_FRAME_HEADERS)
    except UpstreamTimeoutError as error:
        raise UpstreamTimeoutError(f"pipeline {pipeline.id} timed out ({error.message})") from error
    except UpstreamError as error:  # the same kind (unanswered or not), with the pipeline named
        raise type(error)(f"pipeline {pipeline.id} unreachable ({error.message})") from error
    if response.status_code == 503:
        # The edge (or its cloud) refused at once: pass the refusal and its reason on.
        raise OverloadedError(
            f"pipeline {pipeline.id}: {_error_text(response)}",
            retry_after_s=_retry_after(response),
        )
    if response.status_code != 200:
        raise UpstreamError(f"pipeline {pipeline.id} failed: {_error_text(response)}")
    return response


def _retry_after(response: PeerResponse) -> float:
    try:
        return max(1.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _error_text(response: PeerResponse) -> str:
    try:
        return f"{response.status_code} {response.json()['error']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.text[:200]}"
