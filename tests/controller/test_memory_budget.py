"""The edge memory budget: checked against the memory limit the edge partitions report,
and a pipeline that would not fit refused before it starts, with the reason, while the
current one keeps serving. Real processes; memory as the process backend measures it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from controller.app import create_app
from controller.assemble import build_controller
from controller.backends.base import ServiceKind
from controller.pipelines import PipelineState
from controller.settings import StrategyName
from testbed.faults import CUT_AT_HIGH, CUT_AT_LOW, tiny_probe_client
from tests.controller.helpers import settings_for, wait_until


def _under_a_1mb_budget(
    slow_edge_tiny, gateway, token: str, tmp_path: Path, link, strategy, **extra: object
):
    """A manual-only controller with a 1 MB edge budget (one edge partition process alone
    is ~100 MB), a probe client on its gateway, and a transport to its API."""
    settings = settings_for(
        slow_edge_tiny,
        gateway,
        token,
        tmp_path / "state",
        strategy=strategy,
        auto=False,
        edge_memory_budget="1MB",
        **extra,
    )
    controller = build_controller(settings, link=link)
    client = tiny_probe_client(gateway.url, slow_edge_tiny)
    return controller, client, httpx.ASGITransport(app=create_app(controller))


def test_a_pipeline_over_the_budget_is_refused_and_the_old_one_serves(
    slow_edge_tiny, gateway, token: str, tmp_path: Path, link
) -> None:
    # Standbys too are kept within the budget.
    controller, client, transport = _under_a_1mb_budget(
        slow_edge_tiny, gateway, token, tmp_path, link, StrategyName.SWITCH_STANDBY
    )
    auth = {"authorization": f"Bearer {token}"}

    async def scenario() -> dict[str, object]:
        async with (
            controller.running(),
            httpx.AsyncClient(transport=transport, base_url="http://controller") as api,
        ):
            assert len(controller.pipelines) == 1, "no standby fits the budget"
            stop = asyncio.Event()
            load = asyncio.create_task(client.run(stop))
            try:
                await wait_until(lambda: len(client.records) >= 5, timeout=30)
                answer = await api.post("/v1/switch", json={"cut": CUT_AT_LOW}, headers=auth)
                await wait_until(lambda: len(client.records) >= 10, timeout=30)
            finally:
                stop.set()
                await load
            assert controller.active.cut == CUT_AT_HIGH
            assert len(controller.pipelines) == 1, "nothing was started, standby or not"
            return {"switch": answer.json(), "state": (await api.get("/v1/state")).json()}

    shown = asyncio.run(scenario())
    switch = shown["switch"]
    assert switch["outcome"] == "abandoned", switch
    assert f"cut {CUT_AT_LOW} refused" in switch["error"]
    assert "edge memory budget" in switch["error"]
    memory = shown["state"]["edge_memory"]
    assert memory["budget_bytes"] == 10**6
    assert memory["limit_bytes"] > 10**8, "the edge reported the memory it runs under"
    assert [r for r in client.records if not r.ok] == []


def test_a_budget_over_the_edges_limit_is_cut_to_it(
    slow_edge_tiny, gateway, token: str, tmp_path: Path, link
) -> None:
    settings = settings_for(
        slow_edge_tiny, gateway, token, tmp_path / "state", edge_memory_budget="4096GiB"
    )
    controller = build_controller(settings, link=link)

    async def scenario() -> None:
        async with controller.running():
            assert controller.edge_memory_limit is not None
            assert controller.edge_memory_budget == controller.edge_memory_limit

    asyncio.run(scenario())
    defaults = settings_for(slow_edge_tiny, gateway, token, tmp_path / "again")
    assert defaults.edge_memory_budget is None, "unset: 80% of the edge's limit, once known"


def test_a_switch_that_replaces_the_active_pipeline_may_pass_the_budget_while_it_drains(
    slow_edge_tiny, gateway, token: str, tmp_path: Path, link
) -> None:
    """switch_on_demand retires the old pipeline once the new one serves: the budget is
    what stays, so the switch goes ahead (within the edge's limit) where a standby would
    be refused, and afterwards one pipeline is left."""
    controller, client, transport = _under_a_1mb_budget(
        slow_edge_tiny, gateway, token, tmp_path, link, StrategyName.SWITCH_ON_DEMAND
    )
    auth = {"authorization": f"Bearer {token}"}

    async def scenario() -> dict[str, object]:
        async with (
            controller.running(),
            httpx.AsyncClient(transport=transport, base_url="http://controller") as api,
        ):
            stop = asyncio.Event()
            load = asyncio.create_task(client.run(stop))
            try:
                await wait_until(lambda: len(client.records) >= 5, timeout=30)
                answer = await api.post("/v1/switch", json={"cut": CUT_AT_LOW}, headers=auth)
                await wait_until(lambda: len(controller.pipelines) == 1, timeout=60)
                await wait_until(lambda: len(client.records) >= 15, timeout=30)
            finally:
                stop.set()
                await load
            assert controller.active is not None
            assert controller.active.cut == CUT_AT_LOW
            return answer.json()

    switch = asyncio.run(scenario())
    assert switch["outcome"] == "switched", switch
    assert [r for r in client.records if not r.ok] == []


def test_a_hosted_standby_is_reckoned_at_what_its_session_adds(
    slow_edge_tiny, gateway, token: str, tmp_path: Path, link
) -> None:
    """A hosted head maps the weights its host already maps: a new one is reckoned at the
    anonymous memory the host's partitions hold, shared out, not at the host's whole
    share (interpreter and onnxruntime included). Under a budget between the two a
    standby starts, where reckoning by the running pipelines' mean refused it."""
    controller, _client, _transport = _under_a_1mb_budget(
        slow_edge_tiny,
        gateway,
        token,
        tmp_path,
        link,
        StrategyName.SWITCH_STANDBY,
        hosted_partitions=True,
    )

    async def scenario() -> tuple[int, int]:
        async with controller.running():
            assert len(controller.pipelines) == 1, "no standby fits 1 MB"
            used = await controller.edge_memory_bytes()
            added = await controller.launcher.backend.added_bytes(ServiceKind.EDGE_PARTITION)
            assert added is not None
            assert 0 < added < used / 2, (added, used)
            # Room for what a session adds, not for another host's worth.
            controller.settings.edge_memory_budget = used + (added + used) // 2
            await controller.refresh_standby()
            states = sorted(p.state.value for p in controller.pipelines.values())
            assert states == sorted([PipelineState.ACTIVE.value, PipelineState.STANDBY.value])
            assert all("/hosted/" in p.edge.url for p in controller.pipelines.values())
            return used, added

    used, added = asyncio.run(scenario())
    print(f"hosted edge: {used / 2**20:.0f} MiB in use, a new head adds ~{added / 2**20:.1f} MiB")
