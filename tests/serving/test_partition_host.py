"""The sleep-based edge emulation scales a run's CPU time, not its wall time.

A stand-in partition takes the place of onnxruntime (which computes on the calling
thread with one thread, as the stand-in does): one that burns CPU, and one that sleeps,
which is what a run looks like to its CPU clock while another process holds the core.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from models.runtime import Role
from serving.partition_host import LoadState, PartitionHost, in_idle_thread

SLOWDOWN = 8


class StandInPartition:
    session = object()  # a real session's presence is what turns the emulation on

    def __init__(self, *, burn_s: float = 0.0, descheduled_s: float = 0.0) -> None:
        self.burn_s, self.descheduled_s = burn_s, descheduled_s

    def run(self, feeds: dict) -> dict:
        until = time.thread_time() + self.burn_s
        while time.thread_time() < until:
            pass
        time.sleep(self.descheduled_s)
        return {}


def _host(partition: StandInPartition) -> PartitionHost:
    host = PartitionHost(directory=Path(), cut=1, role=Role.EDGE, threads=1, slowdown=SLOWDOWN)
    host._partition, host.state, host.warm_run_seconds = partition, LoadState.READY, 1.0
    return host


def test_a_run_takes_the_slowdown_times_its_cpu_time() -> None:
    _, seconds = asyncio.run(_host(StandInPartition(burn_s=0.05)).run({}))
    assert seconds >= SLOWDOWN * 0.05 * 0.95


def test_time_without_the_cpu_is_not_multiplied() -> None:
    # Old behaviour: 8 x 0.2 s = 1.6 s for a run that computed nothing while it waited.
    _, seconds = asyncio.run(_host(StandInPartition(descheduled_s=0.2)).run({}))
    assert 0.2 <= seconds < 0.2 + SLOWDOWN * 0.2 / 2


def test_an_idle_priority_load_runs_at_the_idle_class_on_a_thread_of_its_own() -> None:
    """A load beside serving work runs at SCHED_IDLE (Linux), on a thread that ends with
    it, so the pool threads that run requests keep their priority; failures reach the
    caller."""

    def policy_and_thread() -> tuple[int, int]:
        return os.sched_getscheduler(0), threading.get_ident()

    async def scenario() -> tuple[tuple[int, int], tuple[int, int]]:
        idle = await in_idle_thread(policy_and_thread)
        pooled = await asyncio.to_thread(policy_and_thread)
        return idle, pooled

    (idle_policy, idle_thread), (pool_policy, _) = asyncio.run(scenario())
    assert idle_policy == os.SCHED_IDLE
    assert pool_policy == os.SCHED_OTHER
    assert idle_thread not in {t.ident for t in threading.enumerate()}, "the thread ended"

    def failing() -> None:
        raise ValueError("no such partition")

    with pytest.raises(ValueError, match="no such partition"):
        asyncio.run(in_idle_thread(failing))
