"""Bring up a gateway and pipelines as real processes, and drive its admin API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from controller.backends.local import LocalService
from models.runtime import Role, load_partition
from neukonfig.manifest import Manifest, read_manifest


@dataclass
class Stack:
    gateway: LocalService
    pipelines: dict[int, tuple[LocalService, LocalService | None]]
    manifest: Manifest
    token: str
    model: str

    @property
    def infer_url(self) -> str:
        return f"{self.gateway.url}/v2/models/{self.model}/infer"

    def admin(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.token}"}
        return httpx.request(
            method, f"{self.gateway.url}/admin{path}", headers=headers, timeout=30, **kwargs
        )

    def switch(self, pipeline_id: str | None, strategy: str = "manual") -> httpx.Response:
        return self.admin(
            "POST", "/switch", json={"pipeline_id": pipeline_id, "strategy": strategy}
        )

    def register(self, cut: int, edge_url: str, cloud_url: str | None, pipeline_id: str):
        body = {"id": pipeline_id, "cut": cut, "edge_url": edge_url}
        if cloud_url is not None:
            body["cloud_url"] = cloud_url
        return self.admin("POST", "/pipelines", json=body)


def start_stack(
    services,
    parts: Path,
    model: str,
    token: str,
    cuts: list[int],
    edge_env: dict[str, str] | None = None,
    cloud_env: dict[str, str] | None = None,
    cloud_ready_tls: Path | None = None,
    **gateway_env: str,
) -> Stack:
    """Start everything at once (startups overlap), then wait and register ``p{cut}`` for each.
    ``cloud_ready_tls``: the edge's certificates, for clouds that serve mutual TLS."""
    manifest = read_manifest(parts)
    gateway = services.gateway(parts, model, token, **gateway_env)
    pipelines = {}
    for cut in cuts:
        last = cut == manifest.num_cuts - 1
        cloud = None if last else services.cloud(parts, cut, **(cloud_env or {}))
        if cloud is not None:
            cloud.client_tls_dir = cloud_ready_tls
        edge = services.edge(parts, cut, cloud.url if cloud else None, **(edge_env or {}))
        pipelines[cut] = (edge, cloud)
    gateway.wait_ready()
    stack = Stack(gateway, pipelines, manifest, token, model)
    for cut, (edge, cloud) in pipelines.items():
        edge.wait_ready()
        if cloud is not None:
            cloud.wait_ready()
        response = stack.register(cut, edge.url, cloud.url if cloud else None, f"p{cut}")
        assert response.status_code == 201, response.text
    return stack


def expected_logits(parts: Path, batch: np.ndarray) -> np.ndarray:
    return load_partition(parts, 0, Role.CLOUD).run({"input": batch})["logits"]
