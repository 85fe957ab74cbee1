"""Start and stop whole pipelines (a cloud partition plus an edge partition for one cut)."""

from __future__ import annotations

import asyncio
import enum
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from controller.backends.base import Backend, ServiceHandle, ServiceKind, ServiceSpec
from models.planner import Option


class Link(Protocol):
    """How the edge reaches the cloud: ``route`` maps a cloud URL to the edge's view of it.
    ``kernel_sees_link``: the edge's TCP connections cross the link itself, so TCP_INFO
    tells its rate (not so behind a user-space proxy, where the kernel sees loopback)."""

    kernel_sees_link: bool

    def route(self, url: str) -> str: ...

    def unroute(self, url: str) -> None: ...


class DirectLink:
    """The edge talks to the cloud directly (real two-host deployments)."""

    kernel_sees_link = True

    def route(self, url: str) -> str:
        return url

    def unroute(self, url: str) -> None:
        return None


PROBE_ROLE = "probe"


class PipelineState(str, enum.Enum):
    STARTING = "starting"
    STANDBY = "standby"
    ACTIVE = "active"
    STOPPING = "stopping"


@dataclass
class ManagedPipeline:
    id: str
    cut: int
    edge: ServiceHandle
    cloud: ServiceHandle | None
    cloud_url_for_edge: str | None
    state: PipelineState = PipelineState.STARTING
    adopted: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    codec: str = "none"  # what its edge codes the crossing tensor with (neukonfig.codecs)

    @property
    def option(self) -> Option:
        """The planner row it serves: its cut and its codec."""
        return Option(self.cut, self.codec)

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "cut": self.cut,
            "codec": self.codec,
            "state": self.state.value,
            "edge_url": self.edge.url,
            "cloud_url": self.cloud.url if self.cloud else None,
            "adopted": self.adopted,
        }


@dataclass
class PipelineLauncher:
    backend: Backend
    link: Link
    partition_dir: Path
    model: str
    last_cut: int
    edge_threads: int | None
    cloud_threads: int | None
    start_timeout_s: float
    edge_slowdown: float = 1.0
    edge_max_queue_wait_s: float | None = None
    internal_token: str | None = None  # handed to every partition service it starts
    # Each side's directory from `neukonfig certs`: with them, cloud partitions serve
    # mutual TLS and edge partitions call them with the edge's certificate.
    edge_tls_dir: Path | None = None
    cloud_tls_dir: Path | None = None

    async def start(self, option: int | Option) -> ManagedPipeline:
        """Start both partitions at once and wait for both; on any failure stop both.
        ``option``: the cut, and the codec the edge codes the crossing tensor with."""
        option = Option.of(option)
        cut, codec = option.cut, option.codec
        coded = "" if codec == "none" else f"-{codec.replace('+', '-')}"  # a valid name
        pipeline_id = f"{self.model}-cut{cut}{coded}-{uuid.uuid4().hex[:8]}"
        labels = {
            "neukonfig.pipeline": pipeline_id,
            "neukonfig.cut": str(cut),
            "neukonfig.codec": codec,
            "neukonfig.model": self.model,
        }
        cloud = edge = None
        try:
            if cut != self.last_cut:
                cloud = await self.backend.start(
                    self._spec(ServiceKind.CLOUD_PARTITION, pipeline_id, cut, labels)
                )
            cloud_for_edge = await asyncio.to_thread(self.link.route, cloud.url) if cloud else None
            edge = await self.backend.start(
                self._spec(
                    ServiceKind.EDGE_PARTITION, pipeline_id, cut, labels, cloud_url=cloud_for_edge
                )
            )
            started = [s for s in (cloud, edge) if s is not None]
            await asyncio.gather(
                *(self.backend.wait_ready(s, timeout=self.start_timeout_s) for s in started)
            )
        except BaseException:
            await self._stop_services([s for s in (edge, cloud) if s is not None])
            raise
        return ManagedPipeline(
            pipeline_id, cut, edge, cloud, cloud_for_edge, labels=labels, codec=codec
        )

    async def start_probe(self) -> tuple[ServiceHandle, str]:
        """A probe-only cloud service (no model) behind the link: a bandwidth probe target
        that exists whatever the cut, even all-edge, where no cloud partition runs."""
        labels = {"neukonfig.model": self.model, "neukonfig.role": PROBE_ROLE}
        spec = ServiceSpec(
            ServiceKind.CLOUD_PARTITION,
            f"{self.model}-probe",
            self._common_settings(ServiceKind.CLOUD_PARTITION),
            labels,
        )
        handle = await self.backend.start(spec)
        try:
            await self.backend.wait_ready(handle, timeout=self.start_timeout_s)
        except BaseException:
            await self.backend.stop(handle)
            raise
        return handle, await asyncio.to_thread(self.link.route, handle.url)

    async def stop_probe(self, handle: ServiceHandle) -> None:
        await self._stop_services([handle])

    async def stop(self, pipeline: ManagedPipeline) -> None:
        pipeline.state = PipelineState.STOPPING
        await self._stop_services([s for s in (pipeline.edge, pipeline.cloud) if s is not None])

    async def _stop_services(self, services: list[ServiceHandle]) -> None:
        for service in services:
            await self.backend.stop(service)
            if service.spec.kind is ServiceKind.CLOUD_PARTITION:
                await asyncio.to_thread(self.link.unroute, service.url)

    def _common_settings(self, kind: ServiceKind) -> dict[str, str]:
        settings = {"partition_dir": str(self.partition_dir)}
        if self.internal_token:
            settings["internal_token"] = self.internal_token
        on_edge = kind is ServiceKind.EDGE_PARTITION
        tls_dir = self.edge_tls_dir if on_edge else self.cloud_tls_dir
        if tls_dir is not None:
            settings["tls_dir"] = str(tls_dir)
        return settings

    def _spec(
        self,
        kind: ServiceKind,
        pipeline_id: str,
        cut: int,
        labels: dict[str, str],
        *,
        cloud_url: str | None = None,
    ) -> ServiceSpec:
        threads = self.edge_threads if kind is ServiceKind.EDGE_PARTITION else self.cloud_threads
        settings = {**self._common_settings(kind), "cut": str(cut)}
        if threads:
            settings["threads"] = str(threads)
        if cloud_url:
            settings["cloud_url"] = cloud_url
        if kind is ServiceKind.EDGE_PARTITION and self.edge_slowdown > 1:
            settings["slowdown"] = str(self.edge_slowdown)
        if kind is ServiceKind.EDGE_PARTITION and self.edge_max_queue_wait_s is not None:
            settings["max_queue_wait_s"] = str(self.edge_max_queue_wait_s)
        if kind is ServiceKind.EDGE_PARTITION and not self.link.kernel_sees_link:
            settings["kernel_link_evidence"] = "false"
        codec = labels.get("neukonfig.codec", "none")
        if kind is ServiceKind.EDGE_PARTITION and codec != "none":
            settings["codec"] = codec
        role = "edge" if kind is ServiceKind.EDGE_PARTITION else "cloud"
        return ServiceSpec(
            kind, f"{pipeline_id}-{role}", settings, {**labels, "neukonfig.role": role}
        )


def pipelines_from_services(handles: list[ServiceHandle]) -> dict[str, ManagedPipeline]:
    """Group discovered services back into pipelines by their labels (after a restart)."""
    grouped: dict[str, dict[str, ServiceHandle]] = {}
    for handle in handles:
        pipeline_id = handle.spec.labels.get("neukonfig.pipeline")
        role = handle.spec.labels.get("neukonfig.role")
        if pipeline_id and role:
            grouped.setdefault(pipeline_id, {})[role] = handle
    pipelines = {}
    for pipeline_id, roles in grouped.items():
        edge = roles.get("edge")
        if edge is None:
            continue
        cloud = roles.get("cloud")
        pipelines[pipeline_id] = ManagedPipeline(
            pipeline_id,
            int(edge.spec.labels["neukonfig.cut"]),
            edge,
            cloud,
            edge.spec.settings.get("cloud_url"),
            state=PipelineState.STANDBY,
            adopted=True,
            labels={k: v for k, v in edge.spec.labels.items() if k != "neukonfig.role"},
            codec=edge.spec.labels.get("neukonfig.codec", "none"),
        )
    return pipelines


def orphan_services(
    handles: list[ServiceHandle], pipelines: dict[str, ManagedPipeline]
) -> list[ServiceHandle]:
    """Discovered services that belong to no complete pipeline (a start that was cut short)."""
    kept = {id(s) for p in pipelines.values() for s in (p.edge, p.cloud) if s is not None}
    return [
        h
        for h in handles
        if id(h) not in kept and h.spec.labels.get("neukonfig.role") != PROBE_ROLE
    ]
