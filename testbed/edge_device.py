"""An edge device made of resource limits: a CPU share and a memory limit, in a cgroup.

Every edge process (the gateway, every edge partition: their model loads, warm-ups and
serialisation included) starts inside the device's cgroup, so the edge cannot borrow
this machine's spare cores or memory. The device is ``cores`` cores, each ``speed``
times as fast as one core of this machine:

- the device cgroup may use ``cores * speed`` of this machine's cores in all, and
  holds the memory limit;
- each process gets a child cgroup limited to ``threads * speed`` cores, so that one
  single-threaded head runs at the speed of one device core, not of the device's
  cores pooled together (``threads``: its onnxruntime threads, 1 for the gateway);
- a process given several cores that runs several single-threaded things at once (a
  partition host: the active head, a load, a local tail) has, on cgroup v1, each of
  its threads moved into a cgroup of one device core as it appears (``ThreadCaps``,
  polling every 10 ms): a run still takes one core's time, while a load beside it
  takes another core, as on the device. (A new thread runs uncapped until the next
  poll; v2 needs threaded cgroups and does not cap threads: said in the log.)

The CPU period is 10 ms, so throttling slices requests finely instead of adding
100 ms steps. cgroup v1 (per-controller mounts, as on this machine) and v2 (the unified
hierarchy of a Pi or a modern server) are both supported; making cgroups needs root.
Where there is none, the sleep-based slowdown (``NEUKONFIG_EDGE_SLOWDOWN``) remains,
and every report says that it was used instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path

from neukonfig.errors import NeukonfigError

log = logging.getLogger("neukonfig.edge_device")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 10_000


class EdgeDeviceError(NeukonfigError):
    """The edge device cannot be made here (no root, no cgroup controllers)."""


@dataclass(frozen=True)
class DeviceSpec:
    """What is emulated: ``cores`` cores at ``speed`` x a core of this machine, and
    ``memory_bytes`` of memory for the whole edge stack."""

    name: str
    cores: int
    speed: float
    memory_bytes: int
    source: str = "given on the command line"

    def __post_init__(self) -> None:
        if self.cores < 1 or not 0 < self.speed <= 1 or self.memory_bytes < 64 * 2**20:
            raise EdgeDeviceError(
                f"edge device {self.name!r}: need cores >= 1, 0 < speed <= 1 and at least "
                f"64 MiB of memory (got {self.cores}, {self.speed:g}, {self.memory_bytes} B)"
            )

    @property
    def cpus(self) -> float:
        """This machine's cores that the whole device may use."""
        return self.cores * self.speed

    def describe(self) -> str:
        return (
            f"{self.name}: {self.cores} core{'s' if self.cores > 1 else ''} at "
            f"{self.speed:.3g}x this machine's core "
            f"({self.cpus:.3g} CPUs in all), {self.memory_bytes / 2**20:.0f} MiB "
            f"(cgroup CPU quota and memory limit; {self.source})"
        )


def cgroup_version() -> int | None:
    """1 for per-controller mounts (cpu and memory), 2 for the unified hierarchy with
    both controllers, None when neither is usable."""
    if (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists() and (
        CGROUP_ROOT / "memory" / "memory.limit_in_bytes"
    ).exists():
        return 1
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and {"cpu", "memory"} <= set(controllers.read_text().split()):
        return 2
    return None


def cgroups_available() -> bool:
    return os.geteuid() == 0 and cgroup_version() is not None


class ThreadCaps:
    """Moves every thread of the ``procmt-*`` process cgroups under ``cpu_dir`` into a
    cgroup of its own capped at ``quota_us`` per period (one device core), as it appears.
    cgroup v1 only: there a cgroup's ``tasks`` lists thread ids, and a thread can be moved
    alone. Runs in this (the testbed's) process, outside the device."""

    POLL_S = 0.01

    def __init__(self, cpu_dir: Path, quota_us: int) -> None:
        self.cpu_dir = cpu_dir
        self.quota_us = quota_us
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-caps", daemon=True)

    def start(self) -> ThreadCaps:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            for process_dir in self.cpu_dir.glob("procmt-*"):
                with contextlib.suppress(OSError):  # the process or thread just exited
                    self._cap_new_threads(process_dir)

    def _cap_new_threads(self, process_dir: Path) -> None:
        # A new thread starts in its creator's cgroup: the process's, or a capped thread's.
        for group in [process_dir, *process_dir.glob("t-*")]:
            for tid in (group / "tasks").read_text().split():
                if group.name != f"t-{tid}":
                    self._cap(process_dir, tid)

    def _cap(self, process_dir: Path, tid: str) -> None:
        thread_dir = process_dir / f"t-{tid}"
        with contextlib.suppress(FileExistsError):
            thread_dir.mkdir()
            (thread_dir / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (thread_dir / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        (thread_dir / "tasks").write_text(tid)


class EdgeDevice:
    """One emulated device: a cgroup made on ``open`` and removed on ``close``."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.version = cgroup_version()
        self.name = f"neukonfig-edge-{os.getpid()}-{secrets.token_hex(3)}"
        self._opened = False
        self._thread_caps: ThreadCaps | None = None

    # -- paths ----------------------------------------------------------------------

    @property
    def cpu_dir(self) -> Path:
        return CGROUP_ROOT / ("cpu" if self.version == 1 else "") / self.name

    @property
    def memory_dir(self) -> Path:
        return CGROUP_ROOT / ("memory" if self.version == 1 else "") / self.name

    @property
    def cpuacct_dir(self) -> Path:
        """v1 only: CPU time is accounted in its own hierarchy."""
        return CGROUP_ROOT / "cpuacct" / self.name

    # -- life cycle -----------------------------------------------------------------

    def open(self) -> EdgeDevice:
        if os.geteuid() != 0 or self.version is None:
            raise EdgeDeviceError(
                "an emulated edge device needs root and cgroup cpu and memory controllers; "
                "without them use the sleep-based --edge-slowdown"
            )
        try:
            self._make()
        except OSError as error:
            self.close()
            raise EdgeDeviceError(f"cannot make the edge device's cgroup: {error}") from error
        self._opened = True
        if self.version == 1:
            quota = max(1000, round(self.spec.speed * PERIOD_US))
            self._thread_caps = ThreadCaps(self.cpu_dir, quota).start()
        log.info("edge device %s at %s", self.spec.describe(), self.cpu_dir)
        return self

    def _make(self) -> None:
        quota = max(1000, round(self.spec.cpus * PERIOD_US))
        if self.version == 1:
            self.cpu_dir.mkdir()
            (self.cpu_dir / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
            self.cpuacct_dir.mkdir()
            self.memory_dir.mkdir()
            (self.memory_dir / "memory.limit_in_bytes").write_text(str(self.spec.memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting on some kernels
                (self.memory_dir / "memory.memsw.limit_in_bytes").write_text(
                    str(self.spec.memory_bytes)
                )
        else:
            (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu +memory")
            self.cpu_dir.mkdir()
            (self.cpu_dir / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            (self.cpu_dir / "memory.max").write_text(str(self.spec.memory_bytes))
            with contextlib.suppress(OSError):
                (self.cpu_dir / "memory.swap.max").write_text("0")
            (self.cpu_dir / "cgroup.subtree_control").write_text("+cpu +memory")

    def close(self) -> None:
        """Remove the cgroups. The processes in them must have exited: a cgroup that
        still holds one cannot be removed, and is named in the log."""
        if self._thread_caps is not None:
            self._thread_caps.stop()
            self._thread_caps = None
        for directory in sorted(self.cpu_dir.glob("proc*-*")) if self.cpu_dir.exists() else []:
            for thread_dir in sorted(directory.glob("t-*")):
                self._remove(thread_dir)
            self._remove(directory)
        self._remove(self.cpu_dir)
        if self.version == 1:
            self._remove(self.memory_dir)
            self._remove(self.cpuacct_dir)
        self._opened = False

    @staticmethod
    def _remove(directory: Path) -> None:
        if not directory.exists():
            return
        try:
            directory.rmdir()
        except OSError as error:
            log.warning("could not remove cgroup %s: %s", directory, error)

    def __enter__(self) -> EdgeDevice:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what starts processes inside it ---------------------------------------------

    def command_prefix(self, threads: int = 1) -> list[str]:
        """Put in front of a command: the command then runs in its own child cgroup of
        the device, capped at ``threads * speed`` cores, from its first instruction."""
        if not self._opened:
            raise EdgeDeviceError("open the edge device before starting processes in it")
        quota = max(1000, round(min(threads, self.spec.cores) * self.spec.speed * PERIOD_US))
        cpu, memory = shlex.quote(str(self.cpu_dir)), shlex.quote(str(self.memory_dir))
        cpuacct = shlex.quote(str(self.cpuacct_dir))
        # ``procmt-``: several cores, each thread capped at one (``ThreadCaps``).
        kind = "procmt" if threads > 1 else "proc"
        if self.version == 1:
            script = (
                f'child={cpu}/{kind}-$$; mkdir "$child"; '
                f'echo {PERIOD_US} > "$child"/cpu.cfs_period_us; '
                f'echo {quota} > "$child"/cpu.cfs_quota_us; '
                f'echo $$ > "$child"/cgroup.procs; echo $$ > {memory}/cgroup.procs; '
                f"echo $$ > {cpuacct}/cgroup.procs; "
                'exec "$@"'
            )
        else:
            if threads > 1:
                log.warning("cgroup v2: the threads of a %d-core process are not capped", threads)
            script = (
                f'child={cpu}/proc-$$; mkdir "$child"; '
                f"echo '{quota} {PERIOD_US}' > \"$child\"/cpu.max; "
                f'echo $$ > "$child"/cgroup.procs; '
                'exec "$@"'
            )
        return ["/bin/sh", "-c", script, "edge-device"]

    # -- what it measured ------------------------------------------------------------

    def memory(self) -> tuple[int, int]:
        """(bytes in use now, the most ever in use) for the whole device: every process
        in it, pipelines still starting included."""
        if self.version == 1:
            now = int((self.memory_dir / "memory.usage_in_bytes").read_text())
            peak = int((self.memory_dir / "memory.max_usage_in_bytes").read_text())
        else:
            now = int((self.memory_dir / "memory.current").read_text())
            peak_file = self.memory_dir / "memory.peak"  # Linux 5.19 and later
            peak = int(peak_file.read_text()) if peak_file.exists() else now
        return now, peak

    def cpu_stat(self) -> dict[str, int]:
        """``cpu.stat`` summed over the device and each process's child cgroup: periods,
        throttled periods and throttled time (v1), or usage and throttling (v2)."""
        total: dict[str, int] = {}
        processes = sorted(self.cpu_dir.glob("proc*-*"))
        threads = sorted(self.cpu_dir.glob("procmt-*/t-*"))
        for directory in [self.cpu_dir, *processes, *threads]:
            text = (directory / "cpu.stat").read_text()
            for key, value in (line.split() for line in text.splitlines()):
                total[key] = total.get(key, 0) + int(value)
        return total

    def throttled_periods(self) -> int:
        return self.cpu_stat().get("nr_throttled", 0)

    def cpu_usage_seconds(self) -> float:
        """CPU time used by every process of the device so far."""
        if self.version == 1:
            return int((self.cpuacct_dir / "cpuacct.usage").read_text()) / 1e9
        return (
            int(
                dict(line.split() for line in (self.cpu_dir / "cpu.stat").read_text().splitlines())[
                    "usage_usec"
                ]
            )
            / 1e6
        )


# -- named devices -------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A real device by its published figures. Its per-core speed relative to this
    machine is found by timing the same reference model here (``calibrate``)."""

    name: str
    cores: int
    memory_bytes: int
    reference_model: str  # a zoo model
    reference_ms: float  # its published single-thread latency on the device
    source: str


PRESETS: dict[str, Preset] = {
    # Raspberry Pi 4 Model B: 4 Cortex-A72 cores at 1.5 GHz. Speed: MLPerf Inference v1.0,
    # Krai's rpi4coral-fan.on-tflite-v2.4.1-ruy system, MobileNetV2 1.0/224 fp32 single
    # stream, mean latency 59.97 ms (results/.../mobilenet-v2-1.0-224-non-quantized/
    # singlestream/performance/ranging/mlperf_log_summary.txt); its ResNet-50 figure in the
    # same round (592.6 ms) gives a per-core speed within 15% of this one here. The
    # thread count is not stated; if all four cores ran, a real core is slower still.
    # Memory: the 4 GB board, half of it left to the OS and everything else on it.
    "pi4": Preset(
        name="pi4",
        cores=4,
        memory_bytes=2 * 2**30,
        reference_model="mobilenetv2",
        reference_ms=59.97,
        source="MLPerf Inference v1.0, Krai, Raspberry Pi 4 at 1.5 GHz, TFLite 2.4.1",
    ),
}


def calibrate(preset: Preset, workdir: Path, *, runs: int = 30) -> DeviceSpec:
    """The preset as a ``DeviceSpec`` for this machine: speed = the reference model's
    single-thread latency here over its published latency on the device. The timing is
    kept in ``workdir`` (delete it to time again), so that every run of a comparison, and
    the edge profile cached beside it, use one speed."""
    import json
    import platform

    cache = workdir / f"{preset.name}-{preset.reference_model}-here.json"
    machine = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs"
    here_ms = None
    if cache.exists():
        known = json.loads(cache.read_text())
        here_ms = known["here_ms"] if known.get("machine") == machine else None
    if here_ms is None:
        here_ms = reference_latency_ms(preset.reference_model, workdir, runs=runs)
        workdir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"machine": machine, "here_ms": here_ms}) + "\n")
    speed = min(1.0, here_ms / preset.reference_ms)
    return DeviceSpec(
        preset.name,
        cores=preset.cores,
        speed=speed,
        memory_bytes=preset.memory_bytes,
        source=(
            f"{preset.reference_model} 1 thread: {here_ms:.1f} ms here, "
            f"{preset.reference_ms:g} ms on the device ({preset.source})"
        ),
    )


def reference_latency_ms(model: str, workdir: Path, *, runs: int = 30) -> float:
    """Median single-thread onnxruntime latency of a zoo model on this machine."""
    import time as clock

    import numpy as np
    import onnx
    import onnxruntime as ort

    from models.zoo import build_model

    path = workdir / f"{model}.onnx"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        onnx.save(build_model(model), str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in graph_input.shape]
    feed = {graph_input.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        started = clock.perf_counter()
        session.run(None, feed)
        times.append(clock.perf_counter() - started)
    return float(np.median(times)) * 1e3


def device_from_cpus(cpus: float, memory_bytes: int) -> DeviceSpec:
    """A raw device: ``cpus`` of this machine's cores in whole device cores (``1.5`` is
    two cores at 0.75), and a memory limit."""
    import math

    cores = max(1, math.ceil(cpus))
    return DeviceSpec(f"{cpus:g} CPUs", cores=cores, speed=cpus / cores, memory_bytes=memory_bytes)
