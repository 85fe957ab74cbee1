"""Controller crashes and failed starts never take the service down."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from controller.assemble import build_controller
from controller.backends.local import MARKER_VARIABLE, LocalService, ServiceKind
from controller.backends.process import ProcessBackend
from controller.history import Outcome
from controller.settings import StrategyName
from tests.controller.helpers import controller_process_settings, request_body, settings_for


def served(gateway_url: str) -> int:
    body, headers = request_body()
    return httpx.post(
        f"{gateway_url}/v2/models/tiny/infer", content=body, headers=headers, timeout=30
    ).status_code


def routing(gateway_url: str, token: str) -> dict:
    return httpx.get(
        f"{gateway_url}/admin/pipelines", headers={"authorization": f"Bearer {token}"}
    ).json()


def test_a_replacement_that_never_gets_ready_is_abandoned(slow_edge_tiny, gateway, token, tmp_path):
    broken = tmp_path / "parts"
    broken.mkdir()
    for item in slow_edge_tiny.partitions.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "cut011.tail.onnx").unlink()  # the cloud side of cut 11 cannot load
    settings = settings_for(
        dataclasses.replace(slow_edge_tiny, partitions=broken),
        gateway,
        token,
        tmp_path / "state",
        strategy=StrategyName.SWITCH_ON_DEMAND,
        start_timeout_s=5,
        auto=False,
    )
    controller = build_controller(settings)

    async def scenario():
        await controller.start()
        before = controller.active.id
        record = await controller.switch_to(11)
        still = served(gateway.url)
        await controller.shutdown()
        return before, record, still

    before, record, status = asyncio.run(scenario())
    assert record.outcome is Outcome.ABANDONED
    assert "cloud" in record.error
    assert status == 200
    assert controller.active.id == before
    assert not list((tmp_path / "state").glob("*.json"))


@pytest.fixture
def controller_process(slow_edge_tiny, gateway, token, tmp_path):
    state = tmp_path / "state"
    settings = controller_process_settings(slow_edge_tiny, gateway.url, token, state)

    def start(name: str) -> LocalService:
        return LocalService(ServiceKind.CONTROLLER, settings, tmp_path / f"{name}.log").start()

    started: list[LocalService] = []
    try:
        yield start, started, state
    finally:
        for service in started:
            service.kill()
        backend = ProcessBackend(state_dir=state)

        async def cleanup() -> None:
            for handle in await backend.discover():
                await backend.stop(handle)
            await backend.close()

        asyncio.run(cleanup())


def test_killed_controller_leaves_serving_and_restart_adopts(controller_process, gateway, token):
    start, started, state = controller_process
    first = start("first")
    started.append(first)
    first.wait_ready(timeout=120)
    before = routing(gateway.url, token)
    records = sorted(p.name for p in state.glob("*.json"))
    assert before["active"] is not None
    assert len(before["pipelines"]) == 2  # active + one standby
    assert len(records) == 5  # an edge and a cloud per pipeline, and the probe target

    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    assert served(gateway.url) == 200  # the gateway keeps serving with no controller

    second = start("second")
    started.append(second)
    second.wait_ready(timeout=120)
    after = routing(gateway.url, token)
    assert after["active"] == before["active"]
    assert sorted(p["id"] for p in after["pipelines"]) == sorted(
        p["id"] for p in before["pipelines"]
    )
    assert sorted(p.name for p in state.glob("*.json")) == records
    assert served(gateway.url) == 200
    state_view = httpx.get(f"{second.url}/v1/state").json()
    assert state_view["active"] == before["active"]
    assert all(p["adopted"] for p in state_view["pipelines"])
    assert state_view["current_cut"] == 0


def test_controller_killed_mid_switch_restarts_and_rolls_the_switch_back(
    controller_process, gateway, token
):
    """kill -9 while a switch is starting the new pipeline: the gateway keeps serving the
    old one, and the restarted controller stops what the cut-short switch started."""
    start, started, state = controller_process
    first = start("first")
    started.append(first)
    first.wait_ready(timeout=120)
    before = routing(gateway.url, token)
    records = sorted(p.name for p in state.glob("*.json"))

    def switch() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the controller dies mid-request
            httpx.post(
                f"{first.url}/v1/switch",
                json={"cut": 11, "strategy": "switch_on_demand"},
                headers={"authorization": f"Bearer {token}"},
                timeout=60,
            )

    switching = threading.Thread(target=switch, daemon=True)
    switching.start()
    deadline = time.monotonic() + 30
    while len(list(state.glob("*.json"))) <= len(records) and time.monotonic() < deadline:
        time.sleep(0.005)
    new = sorted(set(p.name for p in state.glob("*.json")) - set(records))
    assert new, "the switch started a service"
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    switching.join(timeout=30)
    assert routing(gateway.url, token)["active"] == before["active"]
    assert served(gateway.url) == 200

    second = start("second")
    started.append(second)
    second.wait_ready(timeout=120)
    after = routing(gateway.url, token)
    assert after["active"] == before["active"]
    assert sorted(p["id"] for p in after["pipelines"]) == sorted(
        p["id"] for p in before["pipelines"]
    )
    assert sorted(p.name for p in state.glob("*.json")) == records, "rolled back"
    # Every process the cut-short switch started is gone, recorded or not: each carries
    # the path of its record in its environment.
    left = [p.pid for p in psutil.process_iter() if _marker(p) in {str(state / n) for n in new}]
    assert left == [], "a process of the cut-short switch is still running"
    assert served(gateway.url) == 200


def _marker(process: psutil.Process) -> str | None:
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.environ().get(MARKER_VARIABLE)
    except psutil.Error:
        return None
