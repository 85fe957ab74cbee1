"""The controller with real processes: a real bandwidth drop on a shaped link moves the
service to the new best cut, with each strategy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from controller.assemble import build_controller
from controller.backends.process import ProcessBackend
from controller.core import Controller
from controller.settings import ControllerSettings, StrategyName
from controller.strategies import Outcome
from testbed.faults import CUT_AT_HIGH, CUT_AT_LOW, HIGH, LOW, tiny_probe_client, wait_for
from testbed.netns import CLOUD_ADDRESS, TcLink, netns_available
from testbed.probe_client import RequestRecord, binary_infer_body


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


def controller_process_settings(
    slow_edge_tiny: tuple[Path, Path, Path], gateway_url: str, token: str, state: Path, **more: str
) -> dict[str, str]:
    """Settings of a ``python -m controller`` process on the slow-edge tiny model."""
    parts, edge_profile, cloud_profile = slow_edge_tiny
    return {
        "partition_dir": str(parts),
        "model_name": "tiny",
        "gateway_url": gateway_url,
        "admin_token": token,
        "edge_profile": str(edge_profile),
        "cloud_profile": str(cloud_profile),
        "state_dir": str(state),
        "strategy": "switch_standby",
        "auto": "false",
        **more,
    }


def request_body() -> tuple[bytes, dict[str, str]]:
    batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    return binary_infer_body("input", batch)


async def drop_bandwidth_scenario(
    controller: Controller, gateway_url: str, link, rates: tuple[float, ...] = (LOW,)
) -> list[RequestRecord]:
    """Serve at HIGH, then step the link through ``rates``, each held until a switch."""
    await controller.start()
    assert controller.active is not None
    assert controller.active.cut == CUT_AT_HIGH
    loop = asyncio.create_task(controller.run())
    stop = asyncio.Event()
    client = tiny_probe_client(gateway_url, controller.settings.partition_dir)
    load = asyncio.create_task(client.run(stop))
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
    failed = [r for r in results if not r.ok]
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
    assert [r for r in results if not r.ok] == []


@pytest.mark.root
@pytest.mark.skipif(not netns_available(), reason="needs root and ip/tc")
@pytest.mark.parametrize("strategy", [StrategyName.SWITCH_ON_DEMAND, StrategyName.SWITCH_STANDBY])
def test_quick_tier_over_tc_in_a_network_namespace(
    strategy, slow_edge_tiny, gateway, token, tmp_path
) -> None:
    """The testbed's quick tier: cloud partitions in their own namespace behind a tbf-shaped
    veth; the drop moves the cut with no failed or wrong answer, and nothing is left."""
    state = tmp_path / "state"
    with TcLink(rate_bps=HIGH) as link:
        backend = ProcessBackend(
            state_dir=state, cloud_host=CLOUD_ADDRESS, cloud_command_prefix=link.command_prefix
        )
        settings = settings_for(slow_edge_tiny, gateway, token, state, strategy=strategy)
        controller = build_controller(settings, link=link, backend=backend)
        results = asyncio.run(drop_bandwidth_scenario(controller, gateway.url, link))
    assert not link.exists()
    assert not list(state.glob("*.json"))
    record = controller.history[0]
    assert (record.from_cut, record.to_cut, record.outcome) == (
        CUT_AT_HIGH,
        CUT_AT_LOW,
        Outcome.SWITCHED,
    )
    assert [r for r in results if not r.ok] == []
