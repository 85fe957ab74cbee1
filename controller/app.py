"""The controller's HTTP surface: read-only state and history, metrics, and a manual
switch that needs the admin token. The control loop runs in the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from controller.backends.base import ServiceHandle
from controller.core import Controller
from controller.settings import StrategyName
from models.planner import Option
from neukonfig.errors import CutNotFoundError
from neukonfig.protocol import METRICS_PATH
from neukonfig.service import add_metrics_route, bearer_token_check, install_error_handlers


class ManualSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cut: int = Field(ge=0)
    codec: str = Field(
        default="none",
        description="What the new pipeline's edge codes the crossing tensor with; (cut, "
        "codec) must be an option of the controller's plan (else a 404 lists the cut's "
        "planned codecs)",
    )
    strategy: StrategyName | None = None
    hold_s: float | None = Field(
        default=None,
        gt=0,
        description="Keep this cut for this long, then let the controller decide again; "
        "omitted: until POST /v1/unpin",
    )


def scrape_target(handle: ServiceHandle) -> dict[str, object]:
    """One Prometheus HTTP service discovery entry: ``neukonfig.cut`` becomes the target
    label ``neukonfig_cut`` (dots are not allowed in label names)."""
    labels = {key.replace(".", "_"): value for key, value in handle.spec.labels.items()}
    url = urlsplit(handle.url)
    if url.path:  # a partition in a host process, under its mount
        labels["__metrics_path__"] = url.path + METRICS_PATH
    return {"targets": [url.netloc], "labels": labels}


def scrape_targets(controller: Controller) -> list[dict[str, object]]:
    """Every partition service the controller runs, probe included: the backend decides
    the URLs, so one discovery works for processes, containers and pods alike."""
    handles = [s for p in controller.pipelines.values() for s in (p.edge, p.cloud) if s]
    if controller.probe is not None:
        handles.append(controller.probe)
    return [scrape_target(handle) for handle in handles]


def create_app(controller: Controller) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with controller.running():
            yield

    app = FastAPI(title="neukonfig controller", lifespan=lifespan)
    install_error_handlers(app)
    add_metrics_route(app, controller.metrics)
    token = controller.settings.token
    require_token = Depends(bearer_token_check(lambda: token))

    @app.get("/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v1/state")
    def state() -> dict[str, object]:
        return controller.state()

    @app.get("/v1/targets")
    def targets() -> list[dict[str, object]]:
        # Prometheus http_sd_configs: https://prometheus.io/docs/prometheus/latest/http_sd/
        return scrape_targets(controller)

    @app.get("/v1/history")
    def history() -> dict[str, object]:
        return {"switches": [record.as_dict() for record in controller.full_history()]}

    @app.post("/v1/switch", dependencies=[require_token])
    async def switch(body: ManualSwitch) -> dict[str, object]:
        if body.cut not in controller.planner.indices:
            known = list(controller.planner.indices)
            raise CutNotFoundError(f"cut {body.cut} is not in the partition directory: {known}")
        target = Option(body.cut, body.codec)
        if not controller.planner.plans(target):
            planned = [o.codec for o in controller.planner.options() if o.cut == body.cut]
            raise CutNotFoundError(
                f"cut {body.cut} with codec {body.codec!r} is not in the plan; planned codecs "
                f"of cut {body.cut}: {planned} (lossy codecs need "
                "NEUKONFIG_CONTROLLER_MAX_TOP1_DISAGREEMENT and a profile with their accuracy)"
            )
        record = await controller.switch_manually(
            target, strategy=body.strategy, hold_s=body.hold_s
        )
        return record.as_dict()

    @app.post("/v1/unpin", dependencies=[require_token])
    def unpin() -> dict[str, object]:
        pin = controller.unpin()
        return {"unpinned": pin.describe() if pin is not None else None}

    return app
