"""Real faults under real traffic: a cloud partition killed (kill -9) or hung (SIGSTOP)
while an open-loop client sends requests through the gateway.

The edge answers with its local copy of the tail while the cloud cannot, so no request
fails; the controller notices the cloud's failed health reads and replaces the pipeline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

import httpx
import pytest
from test_controller import probe_client, settings_for, wait_for

from controller.assemble import build_controller
from controller.core import Controller
from controller.settings import StrategyName
from controller.strategies import Outcome
from testbed.probe_client import RequestRecord

RECOVERY_TIMEOUT_S = 30


@dataclass
class FaultRun:
    records: list[RequestRecord]
    fault_at: float  # seconds since the client started
    recovered_after_s: float | None  # fault -> a new pipeline active
    slowest_health_s: float  # the gateway's /v2/health/live while the fault lasted


async def _fault_scenario(controller: Controller, gateway_url: str, fault: signal.Signals):
    await controller.start()
    loop = asyncio.create_task(controller.run())
    client = probe_client(gateway_url, controller.settings.partition_dir)
    stop = asyncio.Event()
    load = asyncio.create_task(client.run(stop))
    broken = controller.active
    assert broken is not None
    assert broken.cloud is not None
    pid = int(broken.cloud.backend_id)
    health: list[float] = []
    try:
        await asyncio.sleep(1.5)
        fault_at = time.perf_counter() - client.started
        os.kill(pid, fault)
        started = time.monotonic()
        replaced = await wait_for(
            lambda: controller.active is not None and controller.active.id != broken.id,
            timeout=RECOVERY_TIMEOUT_S,
        )
        recovered = time.monotonic() - started if replaced else None
        async with httpx.AsyncClient() as http:
            for _ in range(5):  # the gateway stays responsive whatever the cloud does
                began = time.monotonic()
                assert (await http.get(f"{gateway_url}/v2/health/live")).status_code == 200
                health.append(time.monotonic() - began)
        await asyncio.sleep(2.0)
    finally:
        if fault is signal.SIGSTOP:
            os.kill(pid, signal.SIGCONT)  # so that retiring it can stop it
        stop.set()
        records = await load
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await controller.shutdown()
    return FaultRun(records, fault_at, recovered, max(health, default=0.0))


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_cloud_loss_is_answered_locally_then_replaced(
    fault, slow_edge_tiny, gateway, token, link, tmp_path
) -> None:
    settings = settings_for(
        slow_edge_tiny,
        gateway,
        token,
        tmp_path / "state",
        strategy=StrategyName.SWITCH_ON_DEMAND,
        auto=False,  # only the fault moves the pipeline
    )
    controller = build_controller(settings, link=link)
    run = asyncio.run(_fault_scenario(controller, gateway.url, fault))

    assert run.recovered_after_s is not None, controller.state()
    failed = [r for r in run.records if not r.ok]
    assert failed == [], f"{len(failed)} of {len(run.records)} failed: {failed[:3]}"
    fallbacks = [r for r in run.records if r.fallback]
    assert fallbacks, "some requests were answered by the edge's local tail"
    assert all(r.sent_s >= run.fault_at - 0.5 for r in fallbacks), "none before the fault"
    tail = run.records[-5:]
    assert not any(r.fallback for r in tail), "the replacement's cloud answers again"
    (record,) = controller.history
    assert record.outcome is Outcome.SWITCHED
    assert "cloud partition" in record.reason
    assert run.slowest_health_s < 1.0
    assert not list((tmp_path / "state").glob("*.json")), "the broken services were stopped"
