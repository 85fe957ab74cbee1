"""How much CPU other processes used while a measurement ran.

Timings taken while something else runs are inflated, and a multi-threaded
onnxruntime session suffers most: when another process takes one of its cores, every
parallel op waits for the descheduled thread (on a 2-core machine a full-model run went
from 71 ms to 185 ms). A profile records this load next to each timing so that a
contaminated one can be seen, instead of silently moving the planner's crossovers.
"""

from __future__ import annotations

import time
from types import TracebackType

import psutil

# On Linux guest time is already counted in user time; steal is another VM's work.
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")
_MIN_WINDOW_S = 0.5


class OtherLoad:
    """Context manager: CPU that other processes used inside it.

    ``cpu_s`` is system-wide busy time minus this process's own CPU time; ``cores`` is
    that over the wall time (at least 0.5 s).
    """

    def __init__(self) -> None:
        self.cores = 0.0
        self.cpu_s = 0.0
        self._start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __enter__(self) -> OtherLoad:
        self._start = (_busy_cpu_s(), _own_cpu_s(), time.perf_counter())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        busy, own, started = self._start
        elapsed = time.perf_counter() - started
        # CPU counters tick every 10 ms, so a short block can read slightly negative, and
        # one stray tick over a 1 ms block would look like 10 cores: judge short blocks
        # as if they lasted _MIN_WINDOW_S (one tick is then 0.02 cores).
        self.cpu_s = max(0.0, (_busy_cpu_s() - busy) - (_own_cpu_s() - own))
        self.cores = self.cpu_s / max(elapsed, _MIN_WINDOW_S)


def wait_for_quiet(*, max_cores: float, timeout_s: float, sample_s: float = 0.5) -> bool:
    """Wait until the whole machine uses at most ``max_cores``; False on timeout."""
    deadline = time.monotonic() + timeout_s
    cpus = psutil.cpu_count() or 1
    while time.monotonic() < deadline:
        if psutil.cpu_percent(interval=sample_s) * cpus / 100 <= max_cores:
            return True
    return False


def _busy_cpu_s() -> float:
    times = psutil.cpu_times()
    return sum(getattr(times, field, 0.0) for field in _BUSY_FIELDS)


def _own_cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system
