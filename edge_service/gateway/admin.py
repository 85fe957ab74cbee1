"""The gateway's control plane (token required): register, switch, retire, list.

Only HTTP translation lives here; the routing table does the work.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import APIRouter, Depends, status
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from edge_service.gateway.routing import Pipeline, RoutingTable, new_pipeline_id
from edge_service.settings import GatewaySettings
from neukonfig.errors import ConflictError
from neukonfig.peer_client import PeerClient, check_base_url
from neukonfig.protocol import READY_PATH
from neukonfig.service import bearer_token_check, internal_headers

NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
CODEC_PATTERN = r"^[a-z0-9+-]{1,64}$"  # neukonfig.codecs names: int8+zstd, int8-channel


class RegisterPipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=NAME_PATTERN)
    model: str | None = None
    cut: int = Field(ge=0)
    codec: str = Field(
        default="none",
        pattern=CODEC_PATTERN,
        description="What the pipeline's edge codes the crossing tensor with (shown, and "
        "sent back to clients in x-neukonfig-codec)",
    )
    edge_url: AnyHttpUrl
    cloud_url: AnyHttpUrl | None = None

    @field_validator("edge_url")
    @classmethod
    def _reachable_by_peer_client(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        check_base_url(str(url))  # the gateway's PeerClient speaks plain http only
        return url


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline_id: str | None = Field(description="Target pipeline; null pauses serving")
    strategy: str = Field(default="manual", pattern=NAME_PATTERN)


class RetireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drain_timeout_s: float | None = Field(default=None, ge=0, le=3600)


def admin_router(
    table: RoutingTable, settings: GatewaySettings, health: httpx.AsyncClient
) -> APIRouter:
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    router = APIRouter(prefix="/admin", dependencies=[Depends(bearer_token_check(lambda: token))])

    @router.get("/pipelines")
    def list_pipelines() -> dict[str, object]:
        return table.describe()

    @router.post("/pipelines", status_code=status.HTTP_201_CREATED)
    async def register(body: RegisterPipeline) -> dict[str, object]:
        if body.model is not None and body.model != table.model:
            raise ConflictError(f"this gateway serves {table.model!r}, not {body.model!r}")
        edge_url, cloud_url = _url(body.edge_url), _url(body.cloud_url)
        await check_ready(health, [edge_url, cloud_url], settings.ready_check_timeout_s)
        pipeline = Pipeline(
            id=body.id or new_pipeline_id(body.cut),
            model=table.model,
            cut=body.cut,
            codec=body.codec,
            edge_url=edge_url,
            cloud_url=cloud_url,
            client=_pipeline_client(edge_url, settings),
        )
        return table.add(pipeline).describe()

    @router.post("/switch")
    async def switch(body: SwitchRequest) -> dict[str, object]:
        if body.pipeline_id is not None:
            target = table.get(body.pipeline_id)
            # Checked before the flip, so a dead target costs no downtime: the old one stays.
            await check_ready(
                health, [target.edge_url, target.cloud_url], settings.ready_check_timeout_s
            )
        result = table.switch(body.pipeline_id, strategy=body.strategy)
        if settings.fault_stall_at_flip_s:
            time.sleep(settings.fault_stall_at_flip_s)  # blocks the loop on purpose
        return {**result.__dict__, "routing": table.describe()}

    @router.post("/pipelines/{pipeline_id}/retire")
    async def retire(pipeline_id: str, body: RetireRequest | None = None) -> dict[str, object]:
        timeout = settings.drain_timeout_s
        if body is not None and body.drain_timeout_s is not None:
            timeout = body.drain_timeout_s
        return await table.retire(pipeline_id, drain_timeout=timeout)

    return router


def _url(url: AnyHttpUrl | None) -> str | None:
    return str(url).rstrip("/") if url is not None else None


def _pipeline_client(edge_url: str, settings: GatewaySettings) -> PeerClient:
    return PeerClient(
        edge_url,
        timeout=settings.request_timeout_s,
        connect_timeout=settings.connect_timeout_s,
        default_headers=internal_headers(settings.internal_token),
    )


async def check_ready(client: httpx.AsyncClient, urls: list[str | None], timeout: float) -> None:
    """Raise ConflictError naming the first partition service that is not ready."""
    wanted = [url for url in urls if url is not None]
    answers = await asyncio.gather(*(_ready(client, url, timeout) for url in wanted))
    for url, problem in zip(wanted, answers, strict=True):
        if problem is not None:
            raise ConflictError(f"partition service at {url} is not ready ({problem})")


async def _ready(client: httpx.AsyncClient, url: str, timeout: float) -> str | None:
    try:
        response = await client.get(url + READY_PATH, timeout=timeout)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if response.status_code != 200:
        return f"health/ready answered {response.status_code}"
    return None
