"""The controller with real processes: a real bandwidth drop on a shaped link moves the
service to the new best cut, with each strategy."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.assemble import build_controller
from controller.core import Controller
from controller.settings import ControllerSettings, StrategyName
from controller.strategies import Outcome

from conftest import CUT_AT_HIGH, CUT_AT_LOW, HIGH, LOW

RATE_PER_S = 10


def settings_for(
    slow_edge_tiny, gateway, token: str, state_dir: Path, **extra
) -> ControllerSettings:
    parts, edge_profile, cloud_profile = slow_edge_tiny
    values = {
        "partition_dir": parts,
        "model_name": "tiny",
        "gateway_url": gateway.url,
        "admin_token": token,
        "edge_profile": edge_profile,
        "cloud_profile": cloud_profile,
        "state_dir": state_dir,
        "initial_bandwidth": "50mbit",
        "dwell_s": 0.5,
        "start_timeout_s": 60,
        "stop_services_on_exit": True,
    }
    return ControllerSettings(**{**values, **extra})


def request_body() -> tuple[bytes, dict[str, str]]:
    import json

    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3, 32, 32],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": batch.nbytes},
                }
            ]
        }
    ).encode()
    return header + batch.tobytes(), {"inference-header-content-length": str(len(header))}


async def open_loop(url: str, stop: asyncio.Event) -> list[tuple[float, int, float]]:
    """Requests at a fixed rate whatever the answers do; (sent, status, latency) each."""
    body, headers = request_body()
    results: list[tuple[float, int, float]] = []

    async def one(client: httpx.AsyncClient) -> None:
        sent = time.perf_counter()
        try:
            status = (await client.post(url, content=body, headers=headers)).status_code
        except httpx.HTTPError:
            status = 0
        results.append((sent, status, time.perf_counter() - sent))

    async with httpx.AsyncClient(timeout=60) as client:
        tasks = []
        while not stop.is_set():
            tasks.append(asyncio.create_task(one(client)))
            await asyncio.sleep(1 / RATE_PER_S)
        await asyncio.gather(*tasks)
    return results


async def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return False


async def drop_bandwidth_scenario(
    controller: Controller, gateway_url: str, link, rates: tuple[float, ...] = (LOW,)
) -> list:
    """Serve at HIGH, then step the link through ``rates``, each held until a switch."""
    await controller.start()
    assert controller.active is not None
    assert controller.active.cut == CUT_AT_HIGH
    loop = asyncio.create_task(controller.run())
    stop = asyncio.Event()
    load = asyncio.create_task(open_loop(f"{gateway_url}/v2/models/tiny/infer", stop))
    try:
        await asyncio.sleep(1.5)
        for number, rate in enumerate(rates, start=1):
            link.set_rate(rate)
            switched = await wait_for(lambda n=number: len(controller.history) >= n, timeout=30)
            assert switched, json.dumps(controller.state(), default=str)
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        results = await load
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await controller.shutdown()
    return results


@pytest.mark.parametrize("strategy", list(StrategyName))
def test_bandwidth_drop_moves_to_the_new_best_cut(
    strategy, slow_edge_tiny, gateway, token, link, tmp_path
) -> None:
    settings = settings_for(slow_edge_tiny, gateway, token, tmp_path / "state", strategy=strategy)
    controller = build_controller(settings, link=link)
    results = asyncio.run(drop_bandwidth_scenario(controller, gateway.url, link))

    record = controller.history[0]
    assert record.outcome is Outcome.SWITCHED, record
    assert (record.from_cut, record.to_cut) == (CUT_AT_HIGH, CUT_AT_LOW)
    failed = [r for r in results if r[1] != 200]
    if strategy is StrategyName.PAUSE_RESUME:
        assert record.downtime_s > 0.2  # it really paused while the new pipeline started
    else:
        assert failed == []
        assert record.downtime_s < 1e-3
    assert len(results) > 20
    assert not list((tmp_path / "state").glob("*.json")), "every started service was stopped"


def test_bandwidth_recovery_moves_back_using_probes(slow_edge_tiny, gateway, token, link, tmp_path):
    """At cut 11 only 256 bytes cross per request: too thin to estimate from, so the
    controller probes the link, sees it recover, and moves back to cut 0."""
    settings = settings_for(
        slow_edge_tiny, gateway, token, tmp_path / "state", strategy=StrategyName.SWITCH_STANDBY
    )
    controller = build_controller(settings, link=link)
    results = asyncio.run(drop_bandwidth_scenario(controller, gateway.url, link, (LOW, HIGH)))
    moves = [(r.from_cut, r.to_cut) for r in controller.history]
    assert moves == [(CUT_AT_HIGH, CUT_AT_LOW), (CUT_AT_LOW, CUT_AT_HIGH)]
    assert all(r.outcome is Outcome.SWITCHED for r in controller.history)
    assert [r for r in results if r[1] != 200] == []
