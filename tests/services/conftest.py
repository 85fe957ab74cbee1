"""Real service processes on loopback, started per test module and always stopped."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.backends.local import LocalService, ServiceKind


class Services:
    """Starts processes for one test module and stops every one of them afterwards."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[LocalService] = []

    def start(self, kind: ServiceKind, **settings: str) -> LocalService:
        log = self.log_dir / f"{kind.value}-{len(self.started)}.log"
        service = LocalService(kind, settings, log)
        self.started.append(service)
        return service.start()

    def cloud(self, parts: Path, cut: int, **extra: str) -> LocalService:
        return self.start(
            ServiceKind.CLOUD_PARTITION,
            partition_dir=str(parts),
            cut=str(cut),
            threads="1",
            **extra,
        )

    def edge(self, parts: Path, cut: int, cloud_url: str | None, **extra: str) -> LocalService:
        if cloud_url:
            extra["cloud_url"] = cloud_url
        return self.start(
            ServiceKind.EDGE_PARTITION, partition_dir=str(parts), cut=str(cut), threads="1", **extra
        )

    def gateway(self, parts: Path, model: str, token: str, **extra: str) -> LocalService:
        return self.start(
            ServiceKind.GATEWAY,
            partition_dir=str(parts),
            model_name=model,
            admin_token=token,
            **extra,
        )

    def stop_all(self) -> None:
        for service in self.started:
            service.stop()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    running = Services(tmp_path_factory.mktemp("service-logs"))
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture(scope="session")
def admin_token() -> str:
    return secrets.token_urlsafe(24)
