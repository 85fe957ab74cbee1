"""The edge gateway: assembles the OIP routes, the admin routes and /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from edge_service.gateway.admin import admin_router
from edge_service.gateway.inference import MODEL_VERSION, inference_router
from edge_service.gateway.openapi import document_infer_routes
from edge_service.gateway.routing import RoutingTable
from edge_service.settings import GatewaySettings
from neukonfig.manifest import read_manifest
from neukonfig.metrics import Metrics
from neukonfig.service import add_metrics_route, install_error_handlers
from neukonfig.tls import tls_http_client


def create_app(settings: GatewaySettings) -> FastAPI:
    manifest = read_manifest(settings.partition_dir)
    metrics = Metrics(service="gateway")
    table = RoutingTable(metrics, model=settings.model_name)
    health = tls_http_client(settings.tls_dir, timeout=settings.ready_check_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await health.aclose()
        for pipeline in list(table.pipelines.values()):
            await pipeline.client.aclose()

    app = FastAPI(title="neukonfig edge gateway", lifespan=lifespan)
    app.state.routing = table
    install_error_handlers(app)
    app.include_router(inference_router(table, settings, manifest, metrics))  # first: hot path
    add_metrics_route(app, metrics)
    app.include_router(admin_router(table, settings, health))
    document_infer_routes(app, model_name=settings.model_name, version=MODEL_VERSION)
    return app
