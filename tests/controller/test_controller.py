"""The controller with real processes: a real bandwidth drop on a shaped link moves the
service to the new best cut, with each strategy."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from controller.assemble import build_controller
from controller.backends.process import ProcessBackend
from controller.core import Controller
from controller.history import Outcome
from controller.settings import StrategyName
from models.prepare import Prepared
from testbed.faults import CUT_AT_HIGH, CUT_AT_LOW, HIGH, LOW, tiny_probe_client
from testbed.netns import CLOUD_ADDRESS, TcLink, netns_available
from testbed.probe_client import RequestRecord
from tests.controller.helpers import (
    settings_for,
    switch_counts,
    wait_for_switches,
    wait_until,
)


async def drop_bandwidth_scenario(
    controller: Controller,
    prepared: Prepared,
    gateway_url: str,
    link,
    rates: tuple[float, ...] = (LOW,),
) -> list[RequestRecord]:
    """Serve at HIGH, then step the link through ``rates``, each held until its switch has
    finished and the new cut has answered a request."""
    client = tiny_probe_client(gateway_url, prepared)
    async with controller.running():
        assert controller.active is not None
        assert controller.active.cut == CUT_AT_HIGH
        stop = asyncio.Event()
        load = asyncio.create_task(client.run(stop))
        try:
            await wait_until(lambda: len(client.records) >= 10, timeout=30)
            for number, rate in enumerate(rates, start=1):
                link.set_rate(rate)
                history = await wait_for_switches(controller, number)
                target = history[-1].to_cut
                answered = await wait_until(
                    lambda t=target: any(r.ok and r.cut == t for r in client.records), timeout=30
                )
                assert answered, f"no request answered at cut {target}: {controller.state()}"
        finally:
            stop.set()
            results = await load
    return results


@pytest.mark.parametrize("strategy", list(StrategyName))
def test_bandwidth_drop_moves_to_the_new_best_cut(
    strategy, slow_edge_tiny, gateway, token, link, tmp_path
) -> None:
    settings = settings_for(slow_edge_tiny, gateway, token, tmp_path / "state", strategy=strategy)
    controller = build_controller(settings, link=link)
    results = asyncio.run(drop_bandwidth_scenario(controller, slow_edge_tiny, gateway.url, link))

    record = controller.history[0]
    assert record.outcome is Outcome.SWITCHED, record
    assert (record.from_cut, record.to_cut) == (CUT_AT_HIGH, CUT_AT_LOW)
    failed = [r for r in results if not r.ok]
    if strategy is StrategyName.PAUSE_RESUME:
        # It really paused while the new pipeline started, and requests waited.
        assert record.unavailable_s > 0.2
    else:
        assert failed == []
        assert record.unavailable_s == 0.0, "the pointer was never empty"
    assert any(r.ok and r.cut == CUT_AT_LOW for r in results)
    # The metrics agree with each other and with the history: one switch, counted once
    # with its unavailability, and the gateway's start is not a switch.
    expected = {strategy.value: (1.0, 1.0)}
    assert switch_counts(httpx.get(f"{gateway.url}/metrics").text) == expected
    assert switch_counts(controller.metrics.exposition().decode()) == expected
    assert not list((tmp_path / "state").glob("*.json")), "every started service was stopped"


@pytest.mark.parametrize(
    "strategy", [StrategyName.SWITCH_ON_DEMAND, StrategyName.SWITCH_STANDBY], ids=str
)
def test_hosted_partitions_switch_as_sessions_in_two_host_processes(
    strategy, slow_edge_tiny, gateway, token, link, tmp_path
) -> None:
    """``hosted_partitions``: every edge partition is a session in one edge host process
    and every tail (and the probe) in one cloud host; the drop is served as before, and
    the hosts go when the controller stops."""
    state = tmp_path / "state"
    settings = settings_for(
        slow_edge_tiny, gateway, token, state, strategy=strategy, hosted_partitions=True
    )
    controller = build_controller(settings, link=link)
    hosts: set[str] = set()
    original = controller.launcher.start

    async def start_and_note(option):
        pipeline = await original(option)
        for service in (pipeline.edge, pipeline.cloud):
            if service is not None:
                assert "/hosted/" in service.url, service.url
                hosts.add(service.url.split("/hosted/")[0])
        return pipeline

    controller.launcher.start = start_and_note  # type: ignore[method-assign]
    results = asyncio.run(drop_bandwidth_scenario(controller, slow_edge_tiny, gateway.url, link))

    assert [(r.from_cut, r.to_cut) for r in controller.history] == [(CUT_AT_HIGH, CUT_AT_LOW)]
    assert [r for r in results if not r.ok] == []
    assert any(r.ok and r.cut == CUT_AT_LOW for r in results)
    assert len(hosts) == 2, f"one edge host and one cloud host: {hosts}"
    assert not list(state.glob("*.json")), "the hosts were stopped with the last partition"


def test_bandwidth_recovery_moves_back_using_probes(slow_edge_tiny, gateway, token, link, tmp_path):
    """At cut 11 only 256 bytes cross per request: too thin to estimate from, so the
    controller probes the link, sees it recover, and moves back to cut 0."""
    settings = settings_for(
        slow_edge_tiny, gateway, token, tmp_path / "state", strategy=StrategyName.SWITCH_STANDBY
    )
    controller = build_controller(settings, link=link)
    results = asyncio.run(
        drop_bandwidth_scenario(controller, slow_edge_tiny, gateway.url, link, (LOW, HIGH))
    )
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
        results = asyncio.run(
            drop_bandwidth_scenario(controller, slow_edge_tiny, gateway.url, link)
        )
    assert not link.exists()
    assert not list(state.glob("*.json"))
    record = controller.history[0]
    assert (record.from_cut, record.to_cut, record.outcome) == (
        CUT_AT_HIGH,
        CUT_AT_LOW,
        Outcome.SWITCHED,
    )
    assert [r for r in results if not r.ok] == []
