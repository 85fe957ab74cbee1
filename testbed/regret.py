"""Planner regret, measured: at fixed bandwidths, the end-to-end latency through the
real services of the planner's cut and of the next best predicted cuts.

Regret is how much slower the planner's cut was than the fastest cut measured:
(measured[planner's cut] - min(measured)) / min(measured).

With codecs (``RegretScenario.codecs``), the candidates are (cut, codec) pairs planned
under the accuracy budget, and the best lossless-only pair is always measured too: each
row then says what the budget bought (``coded_vs_lossless``, measured in the same run)
and what it cost (the chosen codec's measured top-1 disagreement). Accuracy is measured
at the cuts where a lossy codec would rank among the ``top`` at one of the bandwidths
(``models.codec_accuracy.cuts_worth_measuring``), and kept beside the partitions.
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
from models.codec_accuracy import accuracy_where_it_matters, cached_measure
from models.planner import CodecBudget, CutChoice, Option, Planner
from models.prepare import Prepared, PrepareOptions, prepare
from models.runtime import sample_input
from neukonfig.codecs import Codec
from neukonfig.profiles import Profile, read_profile
from neukonfig.units import format_bandwidth
from testbed.edge_device import DeviceSpec, EdgeDevice
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
    codecs: tuple[str, ...] = ()
    accuracy_inputs: int = 256
    max_top1_disagreement: float | None = None
    device: DeviceSpec | None = None  # None: the sleep-based slowdown, said in the report

    @property
    def profile_slowdown(self) -> float:
        """How much slower than this machine the edge profile is scaled."""
        return 1 / self.device.speed if self.device else self.edge_slowdown

    def emulated_edge(self) -> str:
        if self.device is not None:
            return self.device.describe()
        if self.edge_slowdown > 1:
            return f"sleep-based slowdown x{self.edge_slowdown:g} (no cgroup)"
        return "none: the edge runs at this machine's speed"


def run_regret(scenario: RegretScenario, progress: Callable[[str], None]) -> dict[str, object]:
    prepared = prepare(
        PrepareOptions(
            scenario.model,
            scenario.workdir,
            scenario.edge_threads,
            scenario.profile_slowdown,
            codecs=scenario.codecs,
        ),
        progress,
    )
    edge, cloud = read_profile(prepared.edge_profile), read_profile(prepared.cloud_profile)
    accuracy_cuts: list[int] = []
    if scenario.codecs and scenario.accuracy_inputs:
        codecs = [Codec.parse(name) for name in scenario.codecs]
        edge, accuracy_cuts = accuracy_where_it_matters(
            prepared.manifest,
            (edge, cloud),
            CodecBudget(scenario.max_top1_disagreement),
            measure=cached_measure(
                prepared.partitions, codecs, inputs=scenario.accuracy_inputs, progress=progress
            ),
            bandwidths=scenario.bandwidths,
            top=scenario.top,
        )
    device = EdgeDevice(scenario.device).open() if scenario.device is not None else None
    try:
        rows = _run_stack(scenario, prepared, (edge, cloud), device, progress)
    finally:
        if device is not None:
            device.close()
    return {
        "benchmark": "planner_regret",
        "model": prepared.manifest.model.name,
        "link": LINK_DESCRIPTIONS[scenario.link],
        "emulated_edge": scenario.emulated_edge(),
        "edge_slowdown": scenario.edge_slowdown,
        "edge_threads": scenario.edge_threads,
        "codecs": list(scenario.codecs),
        "max_top1_disagreement": scenario.max_top1_disagreement,
        "accuracy_inputs": scenario.accuracy_inputs if accuracy_cuts else 0,
        "accuracy_cuts": accuracy_cuts,
        "rows": rows,
    }


def _run_stack(
    scenario: RegretScenario,
    prepared: Prepared,
    profiles: tuple[Profile, Profile],
    device: EdgeDevice | None,
    progress: Callable[[str], None],
) -> list[dict[str, object]]:
    spec = prepared.manifest.model.inputs[0]
    body = binary_infer_body(spec.name, sample_input(spec, batch=1, seed=0))
    state = scenario.workdir / "regret-state"
    placement = device.command_prefix if device is not None else None
    link, backend = open_link(
        scenario.link, rate_bps=scenario.bandwidths[0], state_dir=state, edge_placement=placement
    )
    try:
        with embedded_stack(
            prepared,
            state_dir=state,
            link=link,
            backend=backend,
            edge_threads=scenario.edge_threads,
            edge_slowdown=1.0 if device is not None else scenario.edge_slowdown,
            initial_bandwidth=format_bandwidth(scenario.bandwidths[0]),
            edge_placement=placement,
            settings={"auto": False},
        ) as stack:
            planner = Planner.from_profiles(
                prepared.manifest,
                *profiles,
                budget=CodecBudget(scenario.max_top1_disagreement) if scenario.codecs else None,
            )
            accuracy = _disagreements(profiles[0])
            return asyncio.run(
                _measure_all(scenario, stack, planner, link, body, progress, accuracy)
            )
    finally:
        link.close()


def _disagreements(profile: Profile) -> dict[tuple[int, str], float]:
    """Measured top-1 disagreement per (cut, lossy codec) in ``profile``."""
    return {
        (cut.index, found.codec): 1 - found.top1_agreement
        for cut in profile.cuts
        for found in cut.accuracy
        if found.top1_agreement is not None
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
    planner: Planner,
    link: TcLink | ShapedLink,
    body: tuple[bytes, dict[str, str]],
    progress: Callable[[str], None],
    accuracy: dict[tuple[int, str], float],
) -> list[dict[str, object]]:
    """Every candidate on its own pipeline; the controller is never started, its
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
                ranked = planner.ranked(bandwidth)
                lossless = next(c for c in ranked if Codec.parse(c.codec).lossless_only)
                candidates = list(dict.fromkeys([*ranked[: scenario.top], lossless]))
                measured = {}
                for choice in candidates:
                    label = choice.label
                    progress(f"{format_bandwidth(bandwidth)}: cut {label} ...")
                    measured[label] = await _measure_cut(bench, choice.cut, choice.codec)
                row = _row(bandwidth, ranked[0], candidates, measured)
                if scenario.codecs:
                    row |= _against_lossless(ranked[0], lossless, measured, accuracy)
                rows.append(row)
                progress(f"{format_bandwidth(bandwidth)}: regret {rows[-1]['regret_pct']}%")
    finally:
        await controller.shutdown()
    return rows


async def _measure_cut(bench: _Bench, cut: int, codec: str = "none") -> float:
    """Median latency of sequential requests through a pipeline for ``cut`` alone."""
    pipeline = await bench.launcher.start(Option(cut, codec))
    try:
        cloud_url = pipeline.cloud.url if pipeline.cloud else None
        await bench.gateway.register(
            pipeline_id=pipeline.id,
            cut=cut,
            codec=codec,
            edge_url=pipeline.edge.url,
            cloud_url=cloud_url,
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
    bandwidth: float, chosen: CutChoice, candidates: list[CutChoice], measured: dict[str, float]
) -> dict[str, object]:
    label = chosen.label
    best = min(measured, key=measured.__getitem__)
    regret = (measured[label] - measured[best]) / measured[best]
    return {
        "bandwidth": format_bandwidth(bandwidth),
        "planner_cut": label,
        "planner_predicted_ms": round(chosen.latency_s * 1e3, 1),
        "planner_measured_ms": round(measured[label] * 1e3, 1),
        "best_measured_cut": best,
        "best_measured_ms": round(measured[best] * 1e3, 1),
        "regret_pct": round(regret * 100, 1),
        "candidates": {c.label: round(measured[c.label] * 1e3, 1) for c in candidates},
    }


def _against_lossless(
    chosen: CutChoice,
    lossless: CutChoice,
    measured: dict[str, float],
    accuracy: dict[tuple[int, str], float],
) -> dict[str, object]:
    """What the codec budget bought (measured in the same run) and what it cost."""
    return {
        "lossless_cut": lossless.label,
        "lossless_predicted_ms": round(lossless.latency_s * 1e3, 1),
        "lossless_measured_ms": round(measured[lossless.label] * 1e3, 1),
        "coded_vs_lossless": round(measured[chosen.label] / measured[lossless.label], 3),
        "top1_disagreement": accuracy.get((chosen.cut, chosen.codec), 0.0),
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
        if "lossless_cut" in row:
            cells += [
                f"{row['lossless_cut']} ({row['lossless_measured_ms']})",
                f"{row['coded_vs_lossless']}x",
                f"{row['top1_disagreement']:.1%}",
            ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    if report.get("codecs"):
        lines[0] += " lossless-only pick (ms) | planner / lossless | top-1 disagreement |"
        lines[1] += "---|---:|---:|"
    return "\n".join(lines)
