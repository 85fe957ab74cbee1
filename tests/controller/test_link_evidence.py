"""The controller's own probes, read against what really crossed a shaped link, when the
cloud's receiving process is late (SIGSTOP stands in for a descheduled process on a loaded
machine: the bytes wait in its socket buffer and are then read at once)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.assemble import build_controller
from controller.backends.local import LocalService, ServiceKind
from controller.core import Controller
from controller.settings import ControllerSettings
from models.prepare import Prepared
from testbed.faults import wait_for
from testbed.shaped_link import ShapedLink

LINK_BPS = 14e6
WAIT_S = 30.0  # bounds for conditions on a loaded 2-core machine


@pytest.fixture
def cloud_behind_link(slow_edge_tiny: Prepared, tmp_path: Path) -> Iterator[LocalService]:
    cloud = LocalService(
        ServiceKind.CLOUD_PARTITION,
        {"partition_dir": str(slow_edge_tiny.partitions)},
        tmp_path / "cloud.log",
    ).start()
    try:
        yield cloud.wait_ready()
    finally:
        assert cloud.process is not None
        os.kill(cloud.process.pid, signal.SIGCONT)
        cloud.stop()


def _controller(prepared: Prepared, probe_url: str, tmp_path: Path) -> Controller:
    settings = ControllerSettings(
        partition_dir=prepared.partitions,
        model_name="tiny",
        gateway_url="http://127.0.0.1:9",  # never called: these tests only probe
        admin_token="unused",
        edge_profile=prepared.edge_profile,
        cloud_profile=prepared.cloud_profile,
        state_dir=tmp_path / "state",
    )
    controller = build_controller(settings)
    controller.probe_url = probe_url
    return controller


@contextlib.contextmanager
def _stopped(cloud: LocalService) -> Iterator[None]:
    assert cloud.process is not None
    os.kill(cloud.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(cloud.process.pid, signal.SIGCONT)


@pytest.mark.parametrize("known_bps", [None, 10e6], ids=["no-estimate", "10mbit"])
def test_a_late_receiver_does_not_read_the_link_as_faster_than_it_is(
    known_bps, slow_edge_tiny, cloud_behind_link, tmp_path
) -> None:
    """The whole probe waits in the stopped cloud's socket buffer, so the cloud reads it at
    once and reports it too quick to time. That is no reading of the link (it became a
    floor of 65-125 mbit on this 14 mbit link): the estimate stays what it was, or none,
    and the next probe is four times larger."""
    link = ShapedLink(rate_bps=LINK_BPS).start_in_thread()
    try:
        controller = _controller(slow_edge_tiny, link.route(cloud_behind_link.url), tmp_path)
        if known_bps is not None:
            controller.estimator.raise_floor(0.0, known_bps)

        async def probe_while_stopped() -> int:
            size = controller._probe_size()
            with _stopped(cloud_behind_link):
                probing = asyncio.create_task(controller._probe())
                assert await wait_for(lambda: link.bytes_forwarded >= size, WAIT_S)
            await probing
            await controller._http.aclose()
            return size

        size = asyncio.run(probe_while_stopped())
    finally:
        link.stop()
    assert controller.estimator.current == known_bps
    assert controller._probe_size() == 4 * size


def test_transfers_queued_behind_a_probe_count_its_bytes(
    slow_edge_tiny, cloud_behind_link, tmp_path
) -> None:
    """Just after a drop from 50 to 2 mbit, a probe sized for 50 mbit (312 KB) holds the
    link for over a second, and requests in flight behind it are overdue: the link is their
    bytes *and the probe's* over the oldest one's time, not theirs alone (0.1 mbit)."""
    link = ShapedLink(rate_bps=2e6).start_in_thread()
    try:
        controller = _controller(slow_edge_tiny, link.route(cloud_behind_link.url), tmp_path)
        controller.estimator.raise_floor(0.0, 50e6)  # the link as it was before the drop
        in_flight = [{"age_s": 1.2, "bytes": 12288}, {"age_s": 1.1, "bytes": 12288}]

        async def overdue_beside_a_probe() -> None:
            with _stopped(cloud_behind_link):
                probing = asyncio.create_task(controller._probe())
                assert await wait_for(lambda: link.bytes_forwarded > 0, WAIT_S)
                controller._bound_by_overdue(0, in_flight, now=1.2)
                probing.cancel()
                await asyncio.gather(probing, return_exceptions=True)
            await controller._http.aclose()

        asyncio.run(overdue_beside_a_probe())
    finally:
        link.stop()
    estimate = controller.estimator.current
    assert estimate is not None
    # The cut that a 2 mbit link calls for (11) is best down to 0.5 mbit.
    assert estimate >= 1e6, f"{estimate / 1e6:.3f} mbit read on a 2 mbit link"
