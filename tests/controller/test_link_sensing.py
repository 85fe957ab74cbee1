"""The estimate follows a 10x step down of a saturated link, from what the kernel knows
of the edge's connections (root: tc tbf on a veth).

The aim is half a second as a median over runs, which `neukonfig bench downtime`
measures (the "estimate within 25%" column in docs/results.md). One run here, with the
suite's other work on a 2-core machine, does not hold it: quiet runs read 0.52 s once,
loaded ones up to 1.26 s (the kernel's first reading after the step comes late and an
overdue transfer's cap undershoots meanwhile), and an estimate that touched the rate can
bounce 50% over it for half a second. With stress-ng's two CPU hogs beside the suite
the kernel's readings came later still: one run held a pre-step 63 mbit for about a
second (acknowledgements starved of CPU arrive bunched, so delivery-rate samples read
high). So this test asserts what one run on a loaded 2-core machine does hold, which a
frozen or wrong estimate (the bug it guards against) does not: within 25% by 2.5 s,
and from 2.5 s to 4 s a median within 25% and every sample within 2x. (Not from the
first arrival on: under stress-ng one run read 5.9 mbit at 0.26 s, then a late pre-step
kernel reading of 37.7 mbit at 0.4 s, then 5-7 mbit for good. After it
arrives the estimate wanders: with the offered load at 2.6x the link the queue keeps
growing, and quiet runs read 50% over for half a second, or 40% under for half a
second at 3 s; "80% of samples within 25%" failed on both.)

The tiny model pinned at a cut whose tensor is 64 KiB, 25 requests a second: 13 Mbit/s
of cut tensors, a quarter of the 50 mbit link and over twice what the 5 mbit link after
the step can carry.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from controller.assemble import build_controller
from controller.backends.process import ProcessBackend
from controller.settings import StrategyName
from testbed.faults import tiny_probe_client
from testbed.netns import CLOUD_ADDRESS, TcLink, netns_available
from tests.controller.helpers import settings_for, wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and ip/tc"),
]

BIG_CUT = 5  # 65,664 bytes cross the link at this cut of tiny
HIGH, LOW = 50e6, 5e6
WITHIN = 0.25  # of the tbf rate
BOUND_S = 2.5
TRACE_S = BOUND_S + 1.5


def test_the_estimate_tracks_a_step_down_on_a_saturated_link(
    slow_edge_tiny, gateway, token, tmp_path
):
    state = tmp_path / "state"
    with TcLink(rate_bps=HIGH) as link:
        backend = ProcessBackend(
            state_dir=state, cloud_host=CLOUD_ADDRESS, cloud_command_prefix=link.command_prefix
        )
        settings = settings_for(
            slow_edge_tiny,
            gateway,
            token,
            state,
            strategy=StrategyName.SWITCH_ON_DEMAND,
            auto=False,  # stay at the big cut: this is about the estimate
        )
        controller = build_controller(settings, link=link, backend=backend)
        client = tiny_probe_client(gateway.url, slow_edge_tiny, rate_per_s=25)

        async def scenario() -> list[tuple[float, float | None]]:
            async with controller.running():
                await controller.switch_to(BIG_CUT)
                stop = asyncio.Event()
                traffic = asyncio.create_task(client.run(stop))
                steady = await wait_until(
                    lambda: (controller.estimator.current or 0) > HIGH / 2, timeout=30
                )
                assert steady, f"no estimate near 50 mbit: {controller.state()}"
                await asyncio.sleep(2.0)
                link.set_rate(LOW)
                changed = time.monotonic()
                trace = []
                while time.monotonic() - changed < TRACE_S:
                    trace.append((time.monotonic() - changed, controller.estimator.current))
                    await asyncio.sleep(0.02)
                stop.set()
                await traffic
                return trace

        trace = asyncio.run(scenario())
    print(
        "estimate after the step (s, mbit):", [(round(a, 2), (v or 0) / 1e6) for a, v in trace[:30]]
    )

    def within(value: float | None) -> bool:
        return value is not None and abs(value - LOW) <= WITHIN * LOW

    first = next((at for at, value in trace if within(value)), None)
    shown = [(round(at, 2), round((v or 0) / 1e6, 2)) for at, v in trace[::5]]
    assert first is not None, f"never within {WITHIN:.0%} of 5 mbit: {shown}"
    assert first <= BOUND_S, f"estimate after the step: {shown}"
    later = [value or 0.0 for at, value in trace if at >= BOUND_S]
    assert abs(float(np.median(later)) - LOW) <= WITHIN * LOW, f"off-centre after: {shown}"
    assert min(later) >= LOW / 2, f"it fell far under: {shown}"
    assert max(later) <= 2 * LOW, f"it went back up: {shown}"
