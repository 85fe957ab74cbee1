"""The real link: tc tbf on a veth into a network namespace (root only)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.backends.local import LocalService, ServiceKind
from testbed.netns import CLOUD_ADDRESS, NetnsUnavailableError, TcLink, netns_available

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs root and ip/tc"),
]


@contextlib.contextmanager
def cloud_probe_behind(rate_bps: float, parts: Path, logs: Path) -> Iterator[tuple[TcLink, str]]:
    """A tc link at ``rate_bps`` and a cloud partition service in its namespace (its
    ``/v1/probe`` receives bytes across the link); both gone on the way out."""
    link = TcLink(rate_bps=rate_bps).open()
    probe = None
    try:
        probe = LocalService(
            ServiceKind.CLOUD_PARTITION,
            {"partition_dir": str(parts)},
            logs / "probe.log",
            host=CLOUD_ADDRESS,
            command_prefix=link.command_prefix,
            other_network=True,
        ).start()
        probe.wait_ready()
        yield link, probe.url
    finally:
        if probe is not None:
            probe.stop()
        link.close()


def probe_seconds(url: str, size: int) -> float:
    started = time.perf_counter()
    answer = httpx.post(f"{url}/v1/probe", content=b"\0" * size, timeout=60)
    assert answer.json()["received_bytes"] == size
    return time.perf_counter() - started


def test_tc_link_shapes_real_traffic_and_retunes_live(tiny_parts: Path, tmp_path: Path) -> None:
    with cloud_probe_behind(8e6, tiny_parts, tmp_path) as (link, url):
        slow = probe_seconds(url, 500_000)  # 0.5 s at 8 mbit
        assert 0.4 < slow < 1.5
        link.set_rate(200e6)
        fast = probe_seconds(url, 500_000)
        assert fast < slow / 4
    assert not link.exists()
    devices = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
    assert link.edge_device not in devices


def test_a_probe_timed_by_its_receiver_reads_an_idle_shaped_link_at_its_rate(
    tiny_parts: Path, tmp_path: Path
) -> None:
    """After an idle spell the tbf bucket is full and the start of a probe passes at line
    rate; the cloud's timing of the second half must still read the configured rate."""
    rate = 5e6
    readings = []
    with (
        cloud_probe_behind(rate, tiny_parts, tmp_path) as (_, url),
        httpx.Client(timeout=30) as client,
    ):
        for _ in range(5):
            time.sleep(0.3)  # idle: the bucket refills, as between the controller's probes
            answer = client.post(f"{url}/v1/probe", content=b"\0" * 16384).json()
            readings.append(answer["tail_bytes"] * 8 / answer["tail_seconds"])
    # tbf counts headers too, so the payload rate is a few percent under the rate.
    assert 0.85 * rate < float(np.median(readings)) < 1.1 * rate, readings


def test_close_removes_everything_even_after_a_failure() -> None:
    link = TcLink(rate_bps=1e6)

    def fail_inside() -> None:
        with link:
            assert link.exists()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert not link.exists()


def test_a_second_link_at_once_is_refused_and_the_first_kept() -> None:
    """Both would hold the same /30: the second would take the first one's route."""
    with TcLink(rate_bps=1e6) as first:
        second = TcLink(rate_bps=1e6)
        with pytest.raises(NetnsUnavailableError, match="another tc link is up"):
            second.open()
        assert first.exists()
        assert not second.exists()
    with TcLink(rate_bps=1e6) as again:  # once the first is closed, a new one opens
        assert again.exists()
