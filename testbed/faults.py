"""Fault scenarios under open-loop traffic, shared by the tests (which assert) and
``benchmarks/faults.py`` (which reports): a cloud partition killed or hung, a link that
flaps around a decision boundary, a link that collapses to almost nothing.

Each scenario starts the controller, runs a probe client through the gateway while it
injects the fault into real processes or the real shaped link, and returns a
``FaultRun`` with every request and what recovery took. The slow-edge tiny model
(``slow_edge_tiny``) is the setting: its best cut really moves with bandwidth.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from controller.core import Controller
from controller.history import Outcome
from models.codec_accuracy import measure_accuracy, with_accuracy
from models.partition import partition_model
from models.prepare import Prepared
from models.profiler import profile_partitions
from models.runtime import Role
from neukonfig.codecs import Codec
from neukonfig.profiles import TimingStats, write_profile
from testbed.probe_client import ATOL_OF_SCALE, ProbeClient, RequestRecord, reference_cases
from testbed.shaped_link import ShapedLink

# tiny computes in microseconds, so on its own its best cut would never move. This
# edge profile stands in for a slow edge: every head costs SLOW_HEAD_S, all-edge more.
# Then at 50 mbit shipping the 12 KiB input (cut 0, ~2 ms) wins, and at 2 mbit the
# 256-byte cut 11 after the pooling does (cut 12, as small, gets a slower head so that
# the answer is unique). They cost the same near 9.8 mbit.
SLOW_HEAD_S = 0.010
ALL_EDGE_S = 0.030
HIGH, LOW = 50e6, 2e6
CUT_AT_HIGH, CUT_AT_LOW = 0, 11
RATE_PER_S = 10


def _timing(seconds: float) -> TimingStats:
    return TimingStats(median_s=seconds, p90_s=seconds, min_s=seconds, max_s=seconds, samples=2)


def slow_edge_tiny(
    model: Path, work: Path, *, codecs: Sequence[Codec] = (), accuracy_inputs: int = 0
) -> Prepared:
    """Partition ``model`` (the zoo's tiny) into ``work`` and write the slow-edge
    profiles, ready for ``embedded_stack``; with ``codecs``, their measured costs, and
    the lossy ones' accuracy over ``accuracy_inputs`` seeded inputs."""
    parts = work / "parts"
    manifest = partition_model(model, parts, name="tiny")
    last = manifest.num_cuts - 1
    measured = profile_partitions(
        parts, roles=[Role.EDGE, Role.CLOUD], threads=1, warmup=1, repeats=2, codecs=codecs
    )
    if accuracy_inputs:
        measured = with_accuracy(
            measured, measure_accuracy(parts, codecs, inputs=accuracy_inputs, threads=1)
        )
    cuts = []
    for cut in measured.cuts:
        head = cut.head
        if head is not None and head.compute is not None:
            slow = ALL_EDGE_S if cut.index == last else SLOW_HEAD_S + 0.001 * (cut.index > 11)
            head = head.model_copy(update={"compute": _timing(slow)})
        cuts.append(cut.model_copy(update={"head": head}))
    profile = measured.model_copy(update={"cuts": cuts})
    write_profile(work / "edge.json", profile)
    write_profile(work / "cloud.json", profile)
    return Prepared(model, manifest, parts, work / "edge.json", work / "cloud.json")


def tiny_probe_client(
    gateway_url: str,
    prepared: Prepared,
    rate_per_s: float = RATE_PER_S,
    *,
    atol_of_scale: float = ATOL_OF_SCALE,
) -> ProbeClient:
    """Open-loop requests over 8 inputs, each answer checked against the original model
    (within ``atol_of_scale`` of its largest magnitude)."""
    spec = prepared.manifest.model.inputs[0]
    return ProbeClient(
        url=f"{gateway_url}/v2/models/{prepared.manifest.model.name}/infer",
        input_name=spec.name,
        cases=reference_cases(prepared.model_file, spec),
        rate_per_s=rate_per_s,
        atol_of_scale=atol_of_scale,
    )


@dataclass
class FaultRun:
    fault: str
    records: list[RequestRecord] = field(default_factory=list)
    fault_at_s: float = 0.0  # seconds since the client started
    recovered_after_s: float | None = None  # fault -> the controller's first move
    slowest_health_s: float = 0.0  # the gateway's /v2/health/live during the fault
    switches: int = 0

    def summary(self) -> dict[str, object]:
        failed = [r for r in self.records if not r.ok]
        return {
            "fault": self.fault,
            "requests": len(self.records),
            "failed": len(failed),
            "failed_statuses": sorted({r.status for r in failed}),
            "answered_by_fallback": sum(1 for r in self.records if r.fallback),
            "recovered_after_s": _round(self.recovered_after_s),
            "switches": self.switches,
            "slowest_latency_s": _round(max((r.latency_s for r in self.records), default=0)),
            "slowest_health_s": _round(self.slowest_health_s),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


Steps = Callable[[FaultRun, ProbeClient], Awaitable[None]]


async def serve_while(
    controller: Controller, client: ProbeClient, fault: str, steps: Steps
) -> FaultRun:
    """Start the controller and the traffic, run ``steps``, stop both; always clean up."""
    run = FaultRun(fault)
    async with controller.running():
        stop = asyncio.Event()
        traffic = asyncio.create_task(client.run(stop))
        try:
            await steps(run, client)
        finally:
            stop.set()
            run.records = await traffic
    run.switches = sum(1 for s in controller.history if s.outcome is Outcome.SWITCHED)
    return run


async def wait_for(condition: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return False


async def _health_times(gateway_url: str, count: int = 5) -> float:
    slowest = 0.0
    async with httpx.AsyncClient() as http:
        for _ in range(count):
            began = time.monotonic()
            (await http.get(f"{gateway_url}/v2/health/live", timeout=5)).raise_for_status()
            slowest = max(slowest, time.monotonic() - began)
    return slowest


def partition_fault(
    controller: Controller,
    gateway_url: str,
    fault: signal.Signals,
    timeout_s: float = 30,
    *,
    role: str = "cloud",
) -> Steps:
    """kill -9 (SIGKILL) or hang (SIGSTOP) the active pipeline's cloud (or ``role="edge"``:
    edge) partition mid-traffic; a hosted partition's host process, and so everything
    it hosts."""

    async def steps(run: FaultRun, client: ProbeClient) -> None:
        broken = controller.active
        assert broken is not None
        service = broken.edge if role == "edge" else broken.cloud
        assert service is not None
        pid = int(service.backend_id.split("/")[0])  # a hosted one's: its host's pid
        try:
            await asyncio.sleep(1.5)
            run.fault_at_s = time.perf_counter() - client.started
            os.kill(pid, fault)
            started = time.monotonic()
            moved = await wait_for(
                lambda: controller.active is not None and controller.active.id != broken.id,
                timeout_s,
            )
            run.recovered_after_s = time.monotonic() - started if moved else None
            run.slowest_health_s = await _health_times(gateway_url)
            await asyncio.sleep(2.0)
        finally:
            if fault is signal.SIGSTOP:
                os.kill(pid, signal.SIGCONT)  # so that retiring it can stop it

    return steps


def flapping(link: ShapedLink, *, low: float, high: float, period_s: float, flips: int) -> Steps:
    """The link alternates between ``low`` and ``high`` every ``period_s``."""

    async def steps(run: FaultRun, client: ProbeClient) -> None:
        run.fault_at_s = time.perf_counter() - client.started
        for flip in range(flips):
            link.set_rate(low if flip % 2 == 0 else high)
            await asyncio.sleep(period_s)

    return steps


def collapse(
    controller: Controller, link: ShapedLink, *, rate_bps: float, timeout_s: float = 30
) -> Steps:
    """The link drops to ``rate_bps`` (almost nothing) and stays there."""

    async def steps(run: FaultRun, client: ProbeClient) -> None:
        await asyncio.sleep(1.5)
        run.fault_at_s = time.perf_counter() - client.started
        link.set_rate(rate_bps)
        started = time.monotonic()
        if await wait_for(lambda: controller.history, timeout_s):
            run.recovered_after_s = time.monotonic() - started
        # Long enough for the requests already queued on the dead link to end (answered
        # locally after the edge's 10 s cloud timeout) and the new cut to serve alone.
        await asyncio.sleep(6.0)

    return steps
