"""One pipeline served on loopback by real service processes: gateway -> edge partition
-> cloud partition (none at the all-edge cut), no controller, one onnxruntime thread per partition.

For the benchmarks that time the served path itself (``benchmarks/data_path.py``,
``benchmarks/peers.py``): the gateway is given the pipeline and switched to it through
its admin API, as the controller would.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx

from controller.backends.local import LocalService, ServiceKind
from neukonfig.manifest import CutKind, read_manifest
from neukonfig.tls import Certificates


@contextlib.contextmanager
def loopback_stack(
    parts: Path, cut: int, name: str, logs: Path, certificates: Certificates | None = None
) -> Iterator[str]:
    """Serve ``cut`` of the partitions in ``parts``; yields the OIP infer URL.
    ``certificates``: the edge calls the cloud over mutual TLS (``neukonfig.tls``)."""
    token = secrets.token_urlsafe(24)
    services: list[LocalService] = []
    edge_tls = {"tls_dir": str(certificates.edge)} if certificates else {}
    try:
        cloud_url = None  # the all-edge cut has no cloud partition
        if read_manifest(parts).cut(cut).kind is not CutKind.ALL_EDGE:
            cloud_tls = {"tls_dir": str(certificates.cloud)} if certificates else {}
            cloud = _started(services, ServiceKind.CLOUD_PARTITION, parts, cut, logs, cloud_tls)
            cloud.client_tls_dir = certificates.edge if certificates else None
            cloud_url = cloud.url
        edge_settings = {**edge_tls, **({"cloud_url": cloud_url} if cloud_url else {})}
        edge = _started(services, ServiceKind.EDGE_PARTITION, parts, cut, logs, edge_settings)
        gateway = LocalService(
            ServiceKind.GATEWAY,
            {"partition_dir": str(parts), "model_name": name, "admin_token": token, **edge_tls},
            logs / "gateway.log",
        ).start()
        services.append(gateway)
        for service in services:
            service.wait_ready()
        auth = {"authorization": f"Bearer {token}"}
        pipeline = {"id": "bench", "cut": cut, "edge_url": edge.url, "cloud_url": cloud_url}
        httpx.post(f"{gateway.url}/admin/pipelines", json=pipeline, headers=auth).raise_for_status()
        switch = {"pipeline_id": "bench"}
        httpx.post(f"{gateway.url}/admin/switch", json=switch, headers=auth).raise_for_status()
        yield f"{gateway.url}/v2/models/{name}/infer"
    finally:
        for service in services:
            service.stop()


def _started(
    services: list[LocalService],
    kind: ServiceKind,
    parts: Path,
    cut: int,
    logs: Path,
    extra: dict[str, str],
) -> LocalService:
    settings = {"partition_dir": str(parts), "cut": str(cut), "threads": "1", **extra}
    service = LocalService(kind, settings, logs / f"{kind.value}.log").start()
    services.append(service)
    return service
