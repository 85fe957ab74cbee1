"""Planner regret, measured: at fixed bandwidths, the end-to-end latency through the
real services of the planner's cut and of the next best predicted cuts.

Regret is how much slower the planner's cut was than the fastest cut measured:
(measured[planner's cut] - min(measured)) / min(measured).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from controller.embedded import EmbeddedStack, embedded_stack
from controller.gateway_client import GatewayClient
from controller.pipelines import PipelineLauncher
from models.planner import CutChoice
from models.prepare import PrepareOptions, prepare
from models.runtime import sample_input
from neukonfig.units import format_bandwidth
from testbed.links import LINK_DESCRIPTIONS, LinkKind, open_link
from testbed.netns import TcLink
from testbed.probe_client import binary_infer_body
from testbed.shaped_link import ShapedLink

WARMUP_REQUESTS = 2


@dataclass
class RegretScenario:
    model: str
    bandwidths: list[float]
    top: int
    requests: int
    seconds_per_cut: float
    workdir: Path
    link: LinkKind
    edge_slowdown: float = 1.0
    edge_threads: int = 1


def run_regret(scenario: RegretScenario, progress: Callable[[str], None]) -> dict[str, object]:
    prepared = prepare(
        PrepareOptions(
            scenario.model, scenario.workdir, scenario.edge_threads, scenario.edge_slowdown
        ),
        progress,
    )
    spec = prepared.manifest.model.inputs[0]
    body = binary_infer_body(spec.name, sample_input(spec, batch=1, seed=0))
    state = scenario.workdir / "regret-state"
    link, backend = open_link(scenario.link, rate_bps=scenario.bandwidths[0], state_dir=state)
    try:
        with embedded_stack(
            prepared,
            state_dir=state,
            link=link,
            backend=backend,
            edge_threads=scenario.edge_threads,
            edge_slowdown=scenario.edge_slowdown,
            initial_bandwidth=format_bandwidth(scenario.bandwidths[0]),
            settings={"auto": False},
        ) as stack:
            rows = asyncio.run(_measure_all(scenario, stack, link, body, progress))
    finally:
        link.close()
    return {
        "benchmark": "planner_regret",
        "model": prepared.manifest.model.name,
        "link": LINK_DESCRIPTIONS[scenario.link],
        "edge_slowdown": scenario.edge_slowdown,
        "edge_threads": scenario.edge_threads,
        "rows": rows,
    }


@dataclass
class _Bench:
    """What every measurement in one run shares."""

    scenario: RegretScenario
    launcher: PipelineLauncher
    gateway: GatewayClient
    client: httpx.AsyncClient
    url: str
    body: tuple[bytes, dict[str, str]]


async def _measure_all(
    scenario: RegretScenario,
    stack: EmbeddedStack,
    link: TcLink | ShapedLink,
    body: tuple[bytes, dict[str, str]],
    progress: Callable[[str], None],
) -> list[dict[str, object]]:
    """Every candidate cut on its own pipeline; the controller is never started, its
    launcher and gateway client only do what it would."""
    controller = stack.controller
    rows = []
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            bench = _Bench(
                scenario, controller.launcher, controller.gateway, client, stack.infer_url, body
            )
            for bandwidth in scenario.bandwidths:
                link.set_rate(bandwidth)
                ranked = controller.planner.ranked(bandwidth)[: scenario.top]
                measured = {}
                for choice in ranked:
                    progress(f"{format_bandwidth(bandwidth)}: cut {choice.cut} ...")
                    measured[choice.cut] = await _measure_cut(bench, choice.cut)
                rows.append(_row(bandwidth, ranked, measured))
                progress(f"{format_bandwidth(bandwidth)}: regret {rows[-1]['regret_pct']}%")
    finally:
        await controller.shutdown()
    return rows


def _measure_cut(bench: _Bench, cut: int) -> float:
    """Median latency of sequential requests through a pipeline for ``cut`` alone."""
    pipeline = await bench.launcher.start(cut)
    try:
        cloud_url = pipeline.cloud.url if pipeline.cloud else None
        await bench.gateway.register(
            pipeline_id=pipeline.id, cut=cut, edge_url=pipeline.edge.url, cloud_url=cloud_url
        )
        await bench.gateway.switch(pipeline.id, strategy="benchmark")
        latencies: list[float] = []
        deadline = time.monotonic() + bench.scenario.seconds_per_cut
        for number in range(WARMUP_REQUESTS + bench.scenario.requests):
            started = time.perf_counter()
            answer = await bench.client.post(
                bench.url, content=bench.body[0], headers=bench.body[1]
            )
            answer.raise_for_status()
            if number >= WARMUP_REQUESTS:
                latencies.append(time.perf_counter() - started)
            if len(latencies) >= 2 and time.monotonic() > deadline:
                break
        await bench.gateway.switch(None, strategy="benchmark")
        await bench.gateway.retire(pipeline.id, drain_timeout_s=10)
        return float(np.median(latencies))
    finally:
        await bench.launcher.stop(pipeline)


def _row(
    bandwidth: float, ranked: list[CutChoice], measured: dict[int, float]
) -> dict[str, object]:
    chosen = ranked[0].cut
    best_cut = min(measured, key=measured.get)
    regret = (measured[chosen] - measured[best_cut]) / measured[best_cut]
    return {
        "bandwidth": format_bandwidth(bandwidth),
        "planner_cut": chosen,
        "planner_predicted_ms": round(ranked[0].latency_s * 1e3, 1),
        "planner_measured_ms": round(measured[chosen] * 1e3, 1),
        "best_measured_cut": best_cut,
        "best_measured_ms": round(measured[best_cut] * 1e3, 1),
        "regret_pct": round(regret * 100, 1),
        "candidates": {str(c.cut): round(measured[c.cut] * 1e3, 1) for c in ranked},
    }


def markdown_table(report: dict[str, object]) -> str:
    lines = [
        "| bandwidth | planner cut | predicted ms | measured ms | best measured cut (ms) "
        "| regret | measured per candidate (ms) |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for row in report["rows"]:  # type: ignore[union-attr]
        candidates = ", ".join(f"{cut}: {ms}" for cut, ms in row["candidates"].items())
        cells = [
            row["bandwidth"],
            row["planner_cut"],
            row["planner_predicted_ms"],
            row["planner_measured_ms"],
            f"{row['best_measured_cut']} ({row['best_measured_ms']})",
            f"{row['regret_pct']}%",
            candidates,
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)
