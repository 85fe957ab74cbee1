"""What the edge and cloud partition services share: loading one side of a cut in
the background, readiness, and the health and info routes.

The session loads after the server starts listening, so ``/health/live`` answers
at once while ``/health/ready`` turns true only after a warm-up inference succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import numpy as np
import psutil
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from models.runtime import Partition, Role, load_partition, warm_up
from neukonfig.errors import NotReadyError
from neukonfig.protocol import LIVE_PATH, PARTITION_INFO_PATH, READY_PATH
from neukonfig.wire import ExpectedTensor, decode
from serving.compute_queue import ComputeQueue

T = TypeVar("T")
log = logging.getLogger("neukonfig.partition")

# Runs faster than this stay on the event loop: a thread hand-off costs about 0.1 ms,
# more than the run itself, and blocking the loop this briefly delays nothing else.
INLINE_RUN_MAX_S = 0.002


class LoadState(str, enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class PartitionHost:
    """Owns the one onnxruntime session of a partition service."""

    def __init__(
        self,
        *,
        directory: Path,
        cut: int | None,
        role: Role,
        threads: int | None,
        slowdown: float = 1.0,
        share_weights: bool = False,
        queue: ComputeQueue | None = None,
        idle_priority_load: bool = False,
        shared_arena: bool = False,
    ) -> None:
        self.directory = directory
        # Activations from the process's one shared arena (models.runtime.session_options).
        self.shared_arena = shared_arena
        # Load and warm up only on CPU time nothing else in this process wants: for a
        # partition loaded beside others that are serving (a host's, a local tail).
        self.idle_priority_load = idle_priority_load
        # Emulates a device `slowdown` times slower than this host by sleeping after each
        # run, so the emulation costs no CPU that the other services need. The run's CPU
        # time is scaled, not its wall time: when another process takes this host's core
        # mid-run, scaling the wall time would multiply that contention by the slowdown,
        # which no dedicated device does (under stress-ng an 8x edge fell 2-3x behind).
        self.slowdown = slowdown
        self.share_weights = share_weights
        self.cut = cut
        self.role = role
        self.threads = threads
        self.state = LoadState.LOADING
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.warm_run_seconds: float | None = None
        self._partition: Partition | None = None
        # Shared by every session of the process (a head and its local tail take turns).
        self.queue = queue or ComputeQueue(max_wait_s=float("inf"))

    async def load(self) -> None:
        if self.cut is None:  # probe-only: answers bandwidth probes, runs nothing
            self.state = LoadState.READY
            return
        started = time.perf_counter()
        try:
            if self.idle_priority_load:
                self._partition = await in_idle_thread(self._load_and_warm_up)
            else:
                self._partition = await anyio.to_thread.run_sync(self._load_and_warm_up)
        except Exception as error:  # any failure must show in /health/ready, not vanish
            self.state, self.error = LoadState.FAILED, f"{type(error).__name__}: {error}"
            log.error("loading %s partition of cut %d failed: %s", self.role.value, self.cut, error)
            return
        self.load_seconds = time.perf_counter() - started
        if self.queue.run_s is None and self.warm_run_seconds is not None:
            # The queue's bound is in seconds of compute: know a run's time from the start,
            # or a burst arriving at a fresh pipeline would all be let in.
            self.queue.record(self.warm_run_seconds * self.slowdown)
        self.state = LoadState.READY
        log.info(
            "%s partition of cut %d ready in %.2f s", self.role.value, self.cut, self.load_seconds
        )

    def _load_and_warm_up(self) -> Partition:
        assert self.cut is not None
        partition = load_partition(
            self.directory,
            self.cut,
            self.role,
            threads=self.threads,
            share_weights=self.share_weights,
            shared_arena=self.shared_arena,
        )
        warm_up(partition)
        started = time.perf_counter()
        warm_up(partition)
        self.warm_run_seconds = time.perf_counter() - started
        return partition

    @property
    def partition(self) -> Partition:
        if self.cut is None:
            raise NotReadyError("this service only answers bandwidth probes (no cut loaded)")
        if self.state is not LoadState.READY or self._partition is None:
            raise NotReadyError(f"{self.role.value} partition is {self.state.value}")
        return self._partition

    @property
    def expected_inputs(self) -> list[ExpectedTensor]:
        return self.partition.inputs

    async def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Run in this process's turn, off the event loop (onnxruntime releases the GIL);
        returns outputs and the seconds the run took (its wait for a turn excluded)."""
        partition = self.partition
        inline = self.warm_run_seconds is not None and self.warm_run_seconds < INLINE_RUN_MAX_S
        if inline and self.slowdown <= 1:
            started = time.perf_counter()
            return partition.run(feeds), time.perf_counter() - started
        async with self.queue.slot():
            started = time.perf_counter()
            outputs, cpu_seconds = await anyio.to_thread.run_sync(
                _run_counting_cpu, partition, feeds, self.threads
            )
            if self.slowdown > 1 and partition.session is not None:
                # The emulated device is busy for the whole time: the sleep holds the turn.
                elapsed = time.perf_counter() - started
                await asyncio.sleep(max(0.0, cpu_seconds * self.slowdown - elapsed))
            seconds = time.perf_counter() - started
        self.queue.record(seconds)
        return outputs, seconds

    def info(self) -> dict[str, object]:
        partition = self._partition
        return {
            "role": self.role.value,
            "cut": self.cut,
            "state": self.state.value,
            "error": self.error,
            "model": partition.manifest.model.name if partition else None,
            "tensor": partition.cut.tensor if partition else None,
            "inputs": [t.name for t in partition.inputs] if partition else None,
            "outputs": partition.outputs if partition else None,
            "load_seconds": self.load_seconds,
            "queue": {
                "waiting": self.queue.waiting,
                "expected_wait_s": self.queue.expected_wait_s(),
                "run_s": self.queue.run_s,
                "refused": self.queue.refused,
            },
            "warm_run_seconds": self.warm_run_seconds,
            "slowdown": self.slowdown,
            "shared_arena": self.shared_arena,
            # Loaded from this machine's store of optimized partitions (models.optimized);
            # None for a pass-through side, which loads nothing.
            "optimized": partition.optimized if partition and partition.session else None,
            # PSS, not RSS: weights mapped by several heads are shared between them.
            "pss_bytes": psutil.Process(os.getpid()).memory_full_info().pss,
            "rss_bytes": psutil.Process(os.getpid()).memory_info().rss,
            "pid": os.getpid(),
        }


def start_loading(host: PartitionHost) -> asyncio.Task[None]:
    """Begin loading in the background; call from a lifespan and cancel the task on exit."""
    return asyncio.create_task(host.load(), name=f"load-{host.role.value}-{host.cut}")


def health_router(
    host: PartitionHost, details: Callable[[], dict[str, object]] | None = None
) -> APIRouter:
    """Liveness, readiness and ``/v1/partition`` (the host's info, plus ``details``)."""
    router = APIRouter()

    @router.get(LIVE_PATH)
    def live() -> dict[str, bool]:
        return {"live": True}

    @router.get(READY_PATH)
    def ready() -> JSONResponse:
        body = {"ready": host.state is LoadState.READY, "state": host.state.value}
        if host.error:
            body["error"] = host.error
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @router.get(PARTITION_INFO_PATH)
    def info() -> dict[str, object]:
        return host.info() | (details() if details else {})

    return router


def decode_inputs(body: bytes, host: PartitionHost) -> dict[str, np.ndarray]:
    """Validate a wire frame against what this partition accepts, before onnxruntime sees it."""
    return decode(body, host.expected_inputs)


__all__ = [
    "LoadState",
    "PartitionHost",
    "decode_inputs",
    "health_router",
    "in_idle_thread",
    "start_loading",
]


async def in_idle_thread(work: Callable[[], T]) -> T:
    """Run ``work`` on a thread of its own at the idle scheduling class (SCHED_IDLE on
    Linux: it runs only when no other thread of the device wants the CPU), which ends
    with it. On an emulated Pi (0.34 CPUs) a head loaded at normal priority in a serving
    host kept that host's active head's requests waiting up to 1 s (MobileNetV2, 8
    req/s): the warm-up runs took the CPU they needed. A thread of its own, because an
    unprivileged thread cannot be raised back from the idle class."""
    done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def run() -> None:
        with contextlib.suppress(AttributeError, OSError):  # not Linux: normal priority
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        try:
            result = work()
        except BaseException as error:  # handed to the awaiting task, not lost
            loop.call_soon_threadsafe(_settle, done, None, error)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=run, name="idle-load", daemon=True).start()
    return await done


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _run_counting_cpu(
    partition: Partition, feeds: dict[str, np.ndarray], threads: int | None
) -> tuple[dict[str, np.ndarray], float]:
    """The run's outputs and the CPU time it took per thread of its share. With one
    thread onnxruntime computes on the calling thread, so that thread's clock is exact;
    with more, the process's clock over the threads (a little above: the event loop's
    work meanwhile counts too)."""
    if threads == 1:
        clock, per = time.thread_time, 1
    else:
        clock, per = time.process_time, threads or os.cpu_count() or 1
    started = clock()
    outputs = partition.run(feeds)
    return outputs, (clock() - started) / per
