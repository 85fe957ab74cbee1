"""A typed client for the gateway's admin API (the controller's only way to route)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from neukonfig.errors import (
    ConflictError,
    NeukonfigError,
    NotReadyError,
    UnauthorizedError,
    UpstreamError,
)

_BY_STATUS: dict[int, type[NeukonfigError]] = {
    401: UnauthorizedError,
    409: ConflictError,
    503: NotReadyError,
}


@dataclass(frozen=True)
class PipelineInfo:
    id: str
    cut: int
    edge_url: str
    cloud_url: str | None
    state: str
    in_flight: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PipelineInfo:
        return cls(
            id=body["id"],
            cut=body["cut"],
            edge_url=body["edge_url"],
            cloud_url=body.get("cloud_url"),
            state=body["state"],
            in_flight=body.get("in_flight", 0),
        )


@dataclass(frozen=True)
class Routing:
    active: str | None
    pipelines: list[PipelineInfo]

    def pipeline(self, pipeline_id: str | None) -> PipelineInfo | None:
        return next((p for p in self.pipelines if p.id == pipeline_id), None)


@dataclass(frozen=True)
class SwitchOutcome:
    previous: str | None
    active: str | None
    unavailable_seconds: float  # how long the pointer was empty (0.0: never)


class GatewayClient:
    def __init__(self, base_url: str, *, token: str, timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    async def routing(self) -> Routing:
        body = await self._call("GET", "/admin/pipelines")
        return Routing(body["active"], [PipelineInfo.from_json(p) for p in body["pipelines"]])

    async def register(
        self,
        *,
        pipeline_id: str,
        cut: int,
        edge_url: str,
        cloud_url: str | None,
        codec: str = "none",
    ) -> PipelineInfo:
        body = {
            "id": pipeline_id,
            "cut": cut,
            "codec": codec,
            "edge_url": edge_url,
            "cloud_url": cloud_url,
        }
        return PipelineInfo.from_json(await self._call("POST", "/admin/pipelines", json=body))

    async def switch(self, pipeline_id: str | None, *, strategy: str) -> SwitchOutcome:
        body = await self._call(
            "POST", "/admin/switch", json={"pipeline_id": pipeline_id, "strategy": strategy}
        )
        return SwitchOutcome(body["previous"], body["active"], body["unavailable_seconds"])

    async def retire(self, pipeline_id: str, *, drain_timeout_s: float) -> dict[str, Any]:
        return await self._call(
            "POST",
            f"/admin/pipelines/{pipeline_id}/retire",
            json={"drain_timeout_s": drain_timeout_s},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise UpstreamError(
                f"gateway at {self._http.base_url} unreachable: {error!r}"
            ) from error
        if response.status_code >= 400:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            error_type = _BY_STATUS.get(response.status_code, UpstreamError)
            raise error_type(f"gateway {method} {path}: {response.status_code} {message}")
        return response.json()
