"""The downtime benchmark: every strategy through the same bandwidth schedule, in one run.

For each strategy it starts a fresh gateway, shaped link and controller (process
backend), sends open-loop traffic, changes the link rate on the schedule, samples the
edge side's memory, and then measures what DESIGN.md asks for: edge-measured
unavailability per switch, what the probe client saw (failures, longest gap between
successful answers, latency in steady state and in the switch window), the time from
the bandwidth change to detection, to the new pipeline being ready and to the first
request it served, and peak and steady edge memory.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import psutil

from controller.backends.local import LocalService
from controller.core import Controller
from controller.embedded import embedded_stack
from controller.history import SwitchRecord, format_unavailability
from controller.settings import StrategyName
from models.prepare import Prepared, PrepareOptions, prepare
from neukonfig.units import format_bandwidth
from testbed.links import LINK_DESCRIPTIONS, LinkKind, open_link
from testbed.netns import TcLink
from testbed.probe_client import ProbeCase, ProbeClient, RequestRecord, reference_cases
from testbed.report import machine
from testbed.shaped_link import ShapedLink

MEMORY_EVERY_S = 0.25
WINDOW_AFTER_S = 1.0  # the switch window ends this long after the new pipeline answered


@dataclass
class DowntimeScenario:
    model: str
    strategies: list[StrategyName]
    schedule: list[tuple[float, float]]  # (seconds from start, bits per second)
    rate_per_s: float
    duration_s: float
    workdir: Path
    edge_slowdown: float = 1.0
    edge_threads: int = 1
    profile_repeats: int = 5
    seed: int = 0
    link: LinkKind = LinkKind.PROXY


@dataclass
class MemorySample:
    """Edge memory, and what the controller believed at that moment (for diagnosis)."""

    at_s: float
    pss_bytes: int
    rss_bytes: int
    estimate_bps: float | None = None
    decision: str | None = None


def edge_memory(pids: list[int]) -> tuple[int, int]:
    """PSS and RSS summed over the edge processes: PSS splits shared pages (weights
    mapped by several heads, shared libraries) between them, so the sum is not inflated."""
    pss = rss = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        pss += info.pss
        rss += info.rss
    return pss, rss


def run_downtime(scenario: DowntimeScenario, progress: Callable[[str], None]) -> dict[str, object]:
    prepared = prepare(
        PrepareOptions(
            scenario.model,
            scenario.workdir,
            scenario.edge_threads,
            scenario.edge_slowdown,
            scenario.profile_repeats,
        ),
        progress,
    )
    manifest = prepared.manifest
    cases = reference_cases(prepared.model_file, manifest.model.inputs[0], seed=scenario.seed)
    results = {}
    for strategy in scenario.strategies:
        progress(f"{strategy.value}: running the {scenario.duration_s:g} s schedule ...")
        run = _run_strategy(scenario, strategy, prepared, cases)
        results[strategy.value] = run
        progress(f"{strategy.value}: {summary_line(run)}")
    return {
        "benchmark": "downtime",
        "link": LINK_DESCRIPTIONS[scenario.link],
        "model": manifest.model.name,
        "schedule": [{"at_s": at, "bps": bps} for at, bps in scenario.schedule],
        "rate_per_s": scenario.rate_per_s,
        "duration_s": scenario.duration_s,
        "edge_slowdown": scenario.edge_slowdown,
        "edge_threads": scenario.edge_threads,
        "seed": scenario.seed,
        "machine": machine(),
        "versions": {"onnxruntime": onnxruntime.__version__},
        "strategies": results,
    }


def _run_strategy(
    scenario: DowntimeScenario,
    strategy: StrategyName,
    prepared: Prepared,
    cases: list[ProbeCase],
) -> dict[str, object]:
    logs = scenario.workdir / "bench-logs" / strategy.value
    link, backend = open_link(
        scenario.link, rate_bps=scenario.schedule[0][1], state_dir=logs / "state"
    )
    try:
        with embedded_stack(
            prepared,
            state_dir=logs / "state",
            strategy=strategy,
            link=link,
            backend=backend,
            edge_threads=scenario.edge_threads,
            edge_slowdown=scenario.edge_slowdown,
            initial_bandwidth=format_bandwidth(scenario.schedule[0][1]),
        ) as stack:
            client = ProbeClient(
                url=stack.infer_url,
                input_name=prepared.manifest.model.inputs[0].name,
                cases=cases,
                rate_per_s=scenario.rate_per_s,
            )
            raw = asyncio.run(_drive(scenario, stack.controller, client, link, stack.gateway))
    finally:
        link.close()
    return analyse(raw, scenario)


async def _drive(
    scenario: DowntimeScenario,
    controller: Controller,
    client: ProbeClient,
    link: ShapedLink | TcLink,
    gateway: LocalService,
) -> dict[str, object]:
    async with controller.running():
        stop = asyncio.Event()
        memory: list[MemorySample] = []
        started_unix = time.time()
        client.started = time.perf_counter()
        traffic = asyncio.create_task(client.run(stop))
        sampler = asyncio.create_task(_sample_memory(controller, gateway, client, memory))
        try:
            for at, rate in scenario.schedule[1:]:
                await asyncio.sleep(max(0.0, at - (time.perf_counter() - client.started)))
                link.set_rate(rate)
            await asyncio.sleep(
                max(0.0, scenario.duration_s - (time.perf_counter() - client.started))
            )
        finally:
            stop.set()
            records = await traffic
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            history = list(controller.history)
    return {"records": records, "history": history, "memory": memory, "started_unix": started_unix}


async def _sample_memory(
    controller: Controller, gateway: LocalService, client: ProbeClient, out: list[MemorySample]
) -> None:
    """The edge side: the gateway and every edge partition (active, standby, starting)."""
    while True:
        pids = [gateway.process.pid] if gateway.process else []
        pids += [int(p.edge.backend_id) for p in list(controller.pipelines.values())]
        pss, rss = await asyncio.to_thread(edge_memory, pids)
        at = time.perf_counter() - client.started
        estimate, decision = controller.estimator.current, controller.last_decision
        out.append(MemorySample(at, pss, rss, estimate, decision))
        await asyncio.sleep(MEMORY_EVERY_S)


def analyse(raw: dict[str, object], scenario: DowntimeScenario) -> dict[str, object]:
    records: list[RequestRecord] = raw["records"]  # type: ignore[assignment]
    history: list[SwitchRecord] = raw["history"]  # type: ignore[assignment]
    memory: list[MemorySample] = raw["memory"]  # type: ignore[assignment]
    started_unix: float = raw["started_unix"]  # type: ignore[assignment]
    changes = [at for at, _ in scenario.schedule[1:]]
    switches = [_switch_view(record, started_unix, changes, records) for record in history]
    windows = [
        (s["change_s"], s["window_end_s"]) for s in switches if s["window_end_s"] is not None
    ]
    in_window = [r for r in records if any(a <= r.sent_s <= b for a, b in windows)]
    steady = [r for r in records if r.sent_s < (changes[0] if changes else float("inf"))]
    first_change = changes[0] if changes else scenario.duration_s
    steady_memory = [m.pss_bytes for m in memory if m.at_s < first_change] or [0]
    return {
        "requests": len(records),
        "failed": sum(not r.ok for r in records),
        "wrong_answers": sum(r.status == 200 and not r.correct for r in records),
        "longest_gap_s": longest_gap(records),
        "steady": latency_summary(steady),
        "switch_window": latency_summary(in_window),
        "switches": switches,
        "unavailable_s": [s["unavailable_s"] for s in switches],
        "edge_memory": {
            "steady_pss_mb": round(float(np.median(steady_memory)) / 2**20, 1),
            "peak_pss_mb": round(max((m.pss_bytes for m in memory), default=0) / 2**20, 1),
            "peak_rss_mb": round(max((m.rss_bytes for m in memory), default=0) / 2**20, 1),
        },
        "memory_trace": [[round(m.at_s, 3), m.pss_bytes] for m in memory],
        "controller_trace": [[round(m.at_s, 3), m.estimate_bps, m.decision] for m in memory],
        "trace": [
            [round(r.sent_s, 4), round(r.done_s, 4), r.status, r.correct, r.cut] for r in records
        ],
    }


def _switch_view(
    record: SwitchRecord, started_unix: float, changes: list[float], records: list[RequestRecord]
) -> dict[str, object]:
    trigger = record.trigger_unix - started_unix
    change = max((c for c in changes if c <= trigger), default=trigger)
    served = next(
        (r.done_s for r in records if r.ok and r.cut == record.to_cut and r.done_s >= trigger), None
    )
    ready = trigger + record.ready_after_s if record.ready_after_s is not None else None
    return {
        "from_cut": record.from_cut,
        "to_cut": record.to_cut,
        "outcome": record.outcome.value,
        "change_s": round(change, 3),
        "detected_after_s": round(trigger - change, 3),
        "ready_after_s": round(ready - change, 3) if ready is not None else None,
        "first_served_after_s": round(served - change, 3) if served is not None else None,
        "unavailable_s": record.unavailable_s,
        "window_end_s": round(served + WINDOW_AFTER_S, 3) if served is not None else None,
    }


def longest_gap(records: list[RequestRecord]) -> float:
    """The longest time between consecutive successful completions."""
    done = sorted(r.done_s for r in records if r.ok)
    return round(max((b - a for a, b in itertools.pairwise(done)), default=0.0), 4)


def latency_summary(records: list[RequestRecord]) -> dict[str, float | int]:
    latencies = [r.latency_s for r in records if r.ok]
    if not latencies:
        return {"count": 0}
    ms = np.asarray(latencies) * 1e3
    return {
        "count": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def summary_line(run: dict[str, object]) -> str:
    unavailable = ", ".join(
        format_unavailability(u)
        for u in run["unavailable_s"]  # type: ignore[union-attr]
        if u is not None
    )
    return (
        f"{run['failed']} failed of {run['requests']}, longest gap {run['longest_gap_s']} s, "
        f"admission unavailable [{unavailable}], "
        f"peak edge PSS {run['edge_memory']['peak_pss_mb']} MB"  # type: ignore[index]
    )


def markdown_table(report: dict[str, object]) -> str:
    lines = [
        "| strategy | failed / requests | admission unavailable per switch | longest gap (s) "
        "| steady p50 / p99 (ms) | switch window max (ms) | change → detected / ready / "
        "first served (s) | edge PSS steady / peak (MB) |",
        "|---|---:|---|---:|---|---:|---|---|",
    ]
    for name, run in report["strategies"].items():  # type: ignore[union-attr]
        downtime = ", ".join(
            format_unavailability(u) for u in run["unavailable_s"] if u is not None
        )
        times = "; ".join(
            f"{s['detected_after_s']} / {s['ready_after_s']} / {s['first_served_after_s']}"
            for s in run["switches"]
        )
        steady, window, memory = run["steady"], run["switch_window"], run["edge_memory"]
        cells = [
            name,
            f"{run['failed']} / {run['requests']}",
            downtime or "-",
            str(run["longest_gap_s"]),
            f"{steady.get('p50_ms', '-')} / {steady.get('p99_ms', '-')}",
            str(window.get("max_ms", "-")),
            times or "-",
            f"{memory['steady_pss_mb']} / {memory['peak_pss_mb']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
