"""The emulated edge device really limits the edge (root: cgroups).

A CPU-bound process on the device uses no more than one device core's share of this
machine, measured by the cgroup's own accounting and throttling counters, and a real
edge partition loads its model more slowly there than outside.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from controller.backends.local import LocalService, ServiceKind
from neukonfig.protocol import PARTITION_INFO_PATH
from testbed.edge_device import DeviceSpec, EdgeDevice, EdgeDeviceError, cgroups_available

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not cgroups_available(), reason="needs root and cgroup cpu+memory"),
]

BUSY_S = 2.0


def device(speed: float, cores: int = 4) -> EdgeDevice:
    return EdgeDevice(DeviceSpec("test", cores=cores, speed=speed, memory_bytes=1 << 30))


def test_a_busy_process_gets_one_device_cores_share_and_no_more() -> None:
    busy = f"import time\nt = time.time()\nwhile time.time() - t < {BUSY_S}: pass"
    with device(speed=0.125) as edge:
        started = time.monotonic()
        subprocess.run([*edge.command_prefix(1), sys.executable, "-c", busy], check=True)
        wall = time.monotonic() - started
        used = edge.cpu_usage_seconds()
        throttled = edge.throttled_periods()
    share = used / wall
    # One thread of a 4-core device at 1/8 of a core here: 0.125, not the device's 0.5.
    assert 0.08 < share < 0.125 * 1.15, f"{used:.3f} s of CPU in {wall:.2f} s"
    assert throttled > BUSY_S / 0.01 * 0.5, "the quota throttled most 10 ms periods"


def test_the_whole_device_is_capped_too() -> None:
    """Four busy processes on a device of 2 cores at 0.25: 0.5 CPUs in all, not 4 x 0.25."""
    busy = f"import time\nt = time.time()\nwhile time.time() - t < {BUSY_S}: pass"
    with device(speed=0.25, cores=2) as edge:
        started = time.monotonic()
        processes = [
            subprocess.Popen([*edge.command_prefix(1), sys.executable, "-c", busy])
            for _ in range(4)
        ]
        for process in processes:
            assert process.wait(timeout=60) == 0
        wall = time.monotonic() - started
        share = edge.cpu_usage_seconds() / wall
    assert share < 0.5 * 1.15


def test_a_process_given_several_cores_runs_each_thread_at_one_device_core() -> None:
    """A process placed with 2 cores (a partition host) whose one busy thread (not its
    main one) gets one device core, not the two the process may use: a single-threaded
    run in a host is not sped up by the cores the host has for other work."""
    busy = (
        "import threading, time\n"
        "def spin():\n"
        "    t = time.time()\n"
        f"    while time.time() - t < {BUSY_S}: pass\n"
        "    print(time.thread_time())\n"
        "worker = threading.Thread(target=spin); worker.start(); worker.join()"
    )
    with device(speed=0.125) as edge:
        done = subprocess.run(
            [*edge.command_prefix(2), sys.executable, "-c", busy],
            check=True,
            capture_output=True,
            text=True,
        )
        used = float(done.stdout)
        capped = list(edge.cpu_dir.glob("procmt-*/t-*"))
    assert len(capped) >= 2, "the main thread and the worker were capped"
    # 1/8 of a core (uncapped: the process's 2/8), and a new thread runs uncapped until
    # the next poll (10 ms).
    assert BUSY_S * 0.125 * 0.5 < used < BUSY_S * 0.125 * 1.15 + 0.03, used


def test_an_edge_partition_loads_its_model_more_slowly_on_the_device(
    tiny_parts: Path, tmp_path: Path
) -> None:
    def load_seconds(prefix: list[str], name: str) -> float:
        service = LocalService(
            ServiceKind.EDGE_PARTITION,
            {"partition_dir": str(tiny_parts), "cut": "5", "threads": "1"},
            tmp_path / f"{name}.log",
            command_prefix=prefix,
        )
        try:
            service.start().wait_ready(timeout=240)
            return httpx.get(service.url + PARTITION_INFO_PATH).json()["load_seconds"]
        finally:
            service.stop()

    outside = min(load_seconds([], f"outside-{i}") for i in range(2))
    with device(speed=0.2) as edge:
        inside = load_seconds(edge.command_prefix(1), "inside")
        peak = edge.memory()[1]
    assert inside > 2.5 * outside, f"load {inside:.3f} s on the device, {outside:.3f} s outside"
    assert peak > 20 * 2**20, "the device's memory counted the partition process"


def test_a_device_is_refused_clearly_without_its_limits() -> None:
    with pytest.raises(EdgeDeviceError, match="speed"):
        DeviceSpec("bad", cores=1, speed=2.0, memory_bytes=1 << 30)
