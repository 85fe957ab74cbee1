"""The controller plans (cut, codec) options under a codec budget: it serves a coded
pipeline, moves cut and codec together when the link drops, and moves between two codecs
of one cut by a new pipeline and a pointer flip; without a budget it never plans a lossy
codec. Real processes, real HTTP, the shaping proxy for the link."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from controller.app import create_app
from controller.assemble import build_controller
from controller.settings import StrategyName
from models.planner import Option
from models.prepare import Prepared
from neukonfig.codecs import Codec
from testbed.faults import LOW, slow_edge_tiny, tiny_probe_client
from testbed.probe_client import answers_match, first_output
from tests.controller.helpers import gateway_for, settings_for, wait_for_switches, wait_until

INT8 = "int8"
# How far an int8-coded answer may be from the fp32 one, as a share of its largest
# magnitude: the profile measured at most 0.8% on tiny over 64 seeded inputs.
CODED_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def coded_tiny(zoo_file, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """The slow-edge tiny with int8's measured costs and accuracy in its profiles: under a
    1% budget, 0/int8 (the input in 8 bits) at 50 mbit and 11/int8 at 2 mbit."""
    work = tmp_path_factory.mktemp("coded-tiny")
    return slow_edge_tiny(zoo_file("tiny"), work, codecs=[Codec.parse(INT8)], accuracy_inputs=64)


def test_without_a_budget_no_lossy_codec_is_planned(coded_tiny: Prepared, tmp_path: Path) -> None:
    def planned_codecs(**extra: object) -> set[str]:
        settings = settings_for(coded_tiny, _NoGateway(), "t" * 24, tmp_path, **extra)
        return set(build_controller(settings).planner.codecs)

    assert planned_codecs() == {"none"}, "int8 is lossy: not without a budget"
    assert planned_codecs(max_top1_disagreement="1%") == {"none", INT8}
    with pytest.raises(ValidationError, match="is not a share"):
        planned_codecs(max_top1_disagreement="lots")


def test_a_codec_budget_moves_cut_and_codec_together(
    coded_tiny: Prepared, token: str, tmp_path: Path, link
) -> None:
    with gateway_for(coded_tiny, token, tmp_path / "gateway.log") as gateway:
        settings = settings_for(
            coded_tiny,
            gateway,
            token,
            tmp_path / "state",
            strategy=StrategyName.SWITCH_ON_DEMAND,
            max_top1_disagreement="1%",
            # At 2 mbit int8 saves cut 11 0.7 ms of its 11.6: enough to move back to it
            # after the manual switch only with a band this narrow.
            min_gain_s=0.0002,
            min_gain_fraction=0.01,
        )
        controller = build_controller(settings, link=link)
        client = tiny_probe_client(gateway.url, coded_tiny, atol_of_scale=CODED_TOLERANCE)
        auth = {"authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=create_app(controller))

        async def scenario() -> None:
            async with (
                controller.running(),
                httpx.AsyncClient(transport=transport, base_url="http://controller") as api,
            ):
                assert controller.active.option == Option(0, INT8), controller.state()
                edge = (await api.get("/v1/state")).json()["pipelines"][0]["edge_url"]
                async with httpx.AsyncClient() as direct:
                    shown = (await direct.get(f"{edge}/v1/partition")).json()
                assert shown["codec"] == INT8, shown
                stop = asyncio.Event()
                load = asyncio.create_task(client.run(stop))
                try:
                    await _the_drop_moves_to_11_int8(controller, client, link)
                    await _a_codec_is_switched_by_hand_and_back(controller, api, auth)
                finally:
                    stop.set()
                    await load
                await _answers_are_coded(gateway.url, coded_tiny)

        asyncio.run(scenario())
    failed = [r for r in client.records if not r.ok]
    assert failed == [], failed[:5]
    # The gateway names the codec that crossed (x-neukonfig-codec): each option served.
    assert {r.option for r in client.records} == {"0/int8", "11/int8", 11}


async def _the_drop_moves_to_11_int8(controller, client, link) -> None:
    await wait_until(lambda: len(client.records) >= 10, timeout=30)
    link.set_rate(LOW)
    record = (await wait_for_switches(controller, 1))[-1]
    assert (record.from_cut, record.from_codec) == (0, INT8)
    assert (record.to_cut, record.to_codec) == (11, INT8), record
    assert controller.active.option == Option(11, INT8)
    answered = await wait_until(
        lambda: any(r.ok and r.cut == 11 for r in client.records), timeout=30
    )
    assert answered, controller.state()


async def _a_codec_is_switched_by_hand_and_back(controller, api, auth) -> None:
    """Same cut, another codec: a new pipeline. Once unpinned, the policy sees that plain
    cut 11 is slower than 11/int8 at 2 mbit and moves back (a cut-only identity would
    call cut 11 the best already)."""
    refused = await api.post("/v1/switch", json={"cut": 11, "codec": "fp16"}, headers=auth)
    assert refused.status_code == 404, refused.text
    assert "not in the plan" in refused.json()["error"]
    plain = await api.post("/v1/switch", json={"cut": 11, "codec": "none"}, headers=auth)
    assert plain.json()["outcome"] == "switched", plain.text
    assert controller.active.option == Option(11)
    assert (await api.get("/v1/state")).json()["pin"]["codec"] == "none"
    before = len(controller.history)
    await api.post("/v1/unpin", headers=auth)
    back = await wait_until(lambda: controller.active.option == Option(11, INT8), timeout=60)
    assert back, controller.state()
    # It left plain cut 11, the cut it would call the best by cut alone. (On a loaded
    # machine a high bandwidth reading has sent it by way of 0/int8: CI saw that once.)
    left = controller.history[before]
    assert (left.from_cut, left.from_codec) == (11, "none"), left


async def _answers_are_coded(gateway_url: str, prepared: Prepared) -> None:
    """Near the fp32 answers, but not as near as an uncoded split's: int8 crossed."""
    client = tiny_probe_client(gateway_url, prepared)
    async with httpx.AsyncClient(timeout=30) as direct:
        answers = []
        for (body, headers), expected in client.cases:
            response = await direct.post(client.url, content=body, headers=headers)
            answers.append((first_output(response), expected))
    assert all(answers_match(a, e, atol_of_scale=CODED_TOLERANCE) for a, e in answers)
    assert not all(answers_match(a, e) for a, e in answers), "fp32 answers: nothing was coded"


class _NoGateway:
    """Settings need a gateway URL; building a controller does not reach it."""

    url = "http://127.0.0.1:9"
