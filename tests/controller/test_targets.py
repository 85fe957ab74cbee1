"""GET /v1/targets: the controller lists every partition service it runs, in Prometheus
HTTP service discovery form, and every listed target really serves /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from controller.backends.local import LocalService, ServiceKind
from controller.backends.process import ProcessBackend
from tests.controller.helpers import controller_process_settings


@pytest.fixture
def controller_service(slow_edge_tiny, gateway, token: str, tmp_path: Path) -> Iterator[str]:
    """A real controller process (process backend, an active and a standby pipeline and the
    probe target); whatever it started is stopped afterwards, even if it died."""
    state = tmp_path / "state"
    settings = controller_process_settings(
        slow_edge_tiny, gateway.url, token, state, stop_services_on_exit="true"
    )
    service = LocalService(ServiceKind.CONTROLLER, settings, tmp_path / "controller.log")
    try:
        yield service.start().wait_ready(timeout=120).url
    finally:
        service.stop()
        asyncio.run(_stop_leftovers(state))


async def _stop_leftovers(state: Path) -> None:
    backend = ProcessBackend(state_dir=state)
    for handle in await backend.discover():
        await backend.stop(handle)
    await backend.close()


def test_targets_list_every_partition_service_and_each_serves_metrics(controller_service):
    targets = httpx.get(f"{controller_service}/v1/targets").json()
    state = httpx.get(f"{controller_service}/v1/state").json()

    by_address = {entry["targets"][0]: entry["labels"] for entry in targets}
    assert all(len(entry["targets"]) == 1 for entry in targets)
    assert len(state["pipelines"]) == 2  # the active one and a standby
    for pipeline in state["pipelines"]:
        for role in ("edge", "cloud"):
            url = pipeline[f"{role}_url"]
            if url is None:  # the all-edge cut has no cloud partition
                continue
            assert by_address[urlsplit(url).netloc] == {
                "neukonfig_pipeline": pipeline["id"],
                "neukonfig_cut": str(pipeline["cut"]),
                "neukonfig_codec": pipeline["codec"],
                "neukonfig_model": "tiny",
                "neukonfig_role": role,
            }
    active = next(p for p in state["pipelines"] if p["id"] == state["active"])
    assert urlsplit(active["edge_url"]).netloc in by_address
    probes = [labels for labels in by_address.values() if labels["neukonfig_role"] == "probe"]
    assert probes == [{"neukonfig_model": "tiny", "neukonfig_role": "probe"}]

    for address in by_address:
        metrics = httpx.get(f"http://{address}/metrics", timeout=10)
        assert metrics.status_code == 200, address
        assert "# TYPE neukonfig_requests_total counter" in metrics.text
