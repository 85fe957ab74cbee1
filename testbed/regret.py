"""Planner regret, measured: at fixed bandwidths, the end-to-end latency through the
real services of the planner's cut and of the next best predicted cuts.

Regret is how much slower the planner's cut was than the fastest cut measured:
(measured[planner's cut] - min(measured)) / min(measured).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from controller.gateway_client import GatewayClient
from controller.pipelines import PipelineLauncher
from controller.settings import StrategyName
from controller.up import UpOptions, local_gateway, prepare
from models.planner import CutChoice, Planner, load_planner
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
    options = UpOptions(
        model=scenario.model,
        workdir=scenario.workdir,
        strategy=StrategyName.SWITCH_ON_DEMAND,
        gateway_port=0,
        controller_port=0,
        edge_threads=scenario.edge_threads,
        edge_slowdown=scenario.edge_slowdown,
        link_rate=None,
        schedule=[],
        traffic_rate=0,
        duration_s=None,
        initial_bandwidth=format_bandwidth(scenario.bandwidths[0]),
        profile_repeats=5,
    )
    manifest, parts, edge_profile, cloud_profile = prepare(options.preparation)
    planner = load_planner(parts, edge_profile=edge_profile, cloud_profile=cloud_profile)
    token = secrets.token_urlsafe(24)
    state = scenario.workdir / "regret-state"
    gateway = local_gateway(parts, manifest, token, state / "gateway.log")
    link, backend = open_link(scenario.link, rate_bps=scenario.bandwidths[0], state_dir=state)
    launcher = PipelineLauncher(
        backend=backend,
        link=link,
        partition_dir=parts,
        model=manifest.model.name,
        last_cut=manifest.num_cuts - 1,
        edge_threads=scenario.edge_threads,
        cloud_threads=None,
        start_timeout_s=120,
        edge_slowdown=scenario.edge_slowdown,
    )
    batch = sample_input(manifest.model.inputs[0], batch=1, seed=0)
    body = binary_infer_body(manifest.model.inputs[0].name, batch)
    try:
        gateway.start().wait_ready()
        rows = asyncio.run(
            _measure_all(
                scenario,
                planner,
                launcher,
                link,
                gateway.url,
                token,
                manifest.model.name,
                body,
                progress,
            )
        )
    finally:
        gateway.stop()
        link.close()
    return {
        "benchmark": "planner_regret",
        "model": manifest.model.name,
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
    planner: Planner,
    launcher: PipelineLauncher,
    link: TcLink | ShapedLink,
    gateway_url: str,
    token: str,
    model: str,
    body: tuple[bytes, dict[str, str]],
    progress: Callable[[str], None],
) -> list[dict[str, object]]:
    gateway = GatewayClient(gateway_url, token=token)
    rows = []
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            url = f"{gateway_url}/v2/models/{model}/infer"
            bench = _Bench(scenario, launcher, gateway, client, url, body)
            for bandwidth in scenario.bandwidths:
                link.set_rate(bandwidth)
                ranked = planner.ranked(bandwidth)[: scenario.top]
                measured = {}
                for choice in ranked:
                    progress(f"{format_bandwidth(bandwidth)}: cut {choice.cut} ...")
                    measured[choice.cut] = await _measure_cut(bench, choice.cut)
                rows.append(_row(bandwidth, ranked, measured))
                progress(f"{format_bandwidth(bandwidth)}: regret {rows[-1]['regret_pct']}%")
    finally:
        await gateway.aclose()
    return rows


async def _measure_cut(bench: _Bench, cut: int) -> float:
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
