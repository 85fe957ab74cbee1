"""On a link that does not change, the controller does not switch; an operator's switch is
kept until the operator lets go."""

from __future__ import annotations

import asyncio

import httpx

from controller.app import create_app
from controller.assemble import build_controller
from controller.settings import StrategyName
from testbed.faults import CUT_AT_HIGH, CUT_AT_LOW, tiny_probe_client
from tests.controller.helpers import settings_for, wait_until

# 1.4x above the 9.8 mbit boundary between cut 0 and cut 11: close enough that a noisy
# estimate would cross it, far enough that a right one never does.
FIXED_RATE = 14e6
QUIET_S = 60.0


def test_no_switch_on_a_fixed_link_idle_or_under_steady_traffic(
    slow_edge_tiny, gateway, token, link, tmp_path
) -> None:
    link.set_rate(FIXED_RATE)
    settings = settings_for(
        slow_edge_tiny,
        gateway,
        token,
        tmp_path / "state",
        strategy=StrategyName.SWITCH_STANDBY,
        initial_bandwidth="14mbit",
    )
    controller = build_controller(settings, link=link)
    client = tiny_probe_client(gateway.url, slow_edge_tiny)

    async def scenario() -> list:
        async with controller.running():
            await asyncio.sleep(QUIET_S)  # idle: only probes cross the link
            idle = list(controller.history)
            stop = asyncio.Event()
            traffic = asyncio.create_task(client.run(stop))
            await asyncio.sleep(QUIET_S)
            stop.set()
            records = await traffic
            return [idle, list(controller.history), records]

    idle, busy, records = asyncio.run(scenario())
    assert idle == [], [(r.from_cut, r.to_cut, r.reason) for r in idle]
    assert busy == [], [(r.from_cut, r.to_cut, r.reason) for r in busy]
    assert [r for r in records if not r.ok] == []
    assert {r.cut for r in records} == {CUT_AT_HIGH}


def test_an_operators_switch_is_kept_until_unpinned_or_the_hold_ends(
    slow_edge_tiny, gateway, token, link, tmp_path
) -> None:
    settings = settings_for(
        slow_edge_tiny, gateway, token, tmp_path / "state", strategy=StrategyName.SWITCH_STANDBY
    )
    controller = build_controller(settings, link=link)
    app = create_app(controller)
    auth = {"authorization": f"Bearer {token}"}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            controller.running(),
            httpx.AsyncClient(transport=transport, base_url="http://controller") as api,
        ):
            assert controller.active.cut == CUT_AT_HIGH
            # Pinned with a hold: kept although cut 0 is better at 50 mbit, then released.
            answer = await api.post(
                "/v1/switch", json={"cut": CUT_AT_LOW, "hold_s": 4}, headers=auth
            )
            assert answer.json()["outcome"] == "switched", answer.text
            state = (await api.get("/v1/state")).json()
            assert state["pin"]["cut"] == CUT_AT_LOW
            await asyncio.sleep(3)
            assert controller.active.cut == CUT_AT_LOW, controller.last_decision
            back = await wait_until(lambda: controller.active.cut == CUT_AT_HIGH, timeout=60)
            assert back, controller.state()
            assert (await api.get("/v1/state")).json()["pin"] is None
            # Pinned without a hold: kept until the operator unpins.
            await api.post("/v1/switch", json={"cut": CUT_AT_LOW}, headers=auth)
            await asyncio.sleep(6)
            assert controller.active.cut == CUT_AT_LOW, controller.last_decision
            assert "pinned" in controller.last_decision
            assert (await api.post("/v1/unpin")).status_code == 401, "the token is required"
            unpinned = await api.post("/v1/unpin", headers=auth)
            assert unpinned.json()["unpinned"]["cut"] == CUT_AT_LOW
            back = await wait_until(lambda: controller.active.cut == CUT_AT_HIGH, timeout=60)
            assert back, controller.state()

    asyncio.run(scenario())
