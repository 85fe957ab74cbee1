"""The downtime benchmark: every strategy, and a control run, through the same bandwidth
schedule, measured from the clients' side.

For each strategy, and for the control (the controller pinned to the first cut, so a
reader sees what switching buys), it starts a fresh edge device (cgroups: CPU share and
memory limit), link and embedded stack, sends open-loop traffic that checks every
answer, changes the link rate on the schedule and samples the edge device's memory.
Then it computes DESIGN.md's measures from the probe client's records
(``testbed.client_felt``): per bandwidth change, the time to the right cut, the p99 and
max of the requests sent in the 10 s after it against the settled cut's steady p99, and
the excess request-seconds; per switch, the requests in flight across the flip and the
first requests on the new pipeline, and the admission unavailability. Everything is
repeated ``repeats`` times; the tables give the median and the range, the JSON every run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime
import psutil

from controller.backends.local import LocalService
from controller.core import Controller
from controller.embedded import embedded_stack
from controller.history import SwitchRecord, format_unavailability
from controller.settings import StrategyName
from models.codec_accuracy import accuracy_where_it_matters, cached_measure
from models.planner import CodecBudget
from models.prepare import Prepared, PrepareOptions, prepare
from neukonfig.codecs import Codec
from neukonfig.profiles import Profile, read_profile, write_profile
from neukonfig.units import format_bandwidth
from testbed.client_felt import reactions, steady_latencies, switch_cost
from testbed.edge_device import DeviceSpec, EdgeDevice
from testbed.links import LINK_DESCRIPTIONS, LinkKind, open_link
from testbed.netns import TcLink
from testbed.probe_client import (
    ATOL_OF_SCALE,
    ProbeCase,
    ProbeClient,
    RequestRecord,
    failure_reasons,
    reference_cases,
    served_option,
)
from testbed.report import machine
from testbed.shaped_link import ShapedLink

MEMORY_EVERY_S = 0.25
ESTIMATE_EVERY_S = 0.05
ESTIMATE_WITHIN = 0.25  # issue 14: within 25% of the link's rate
CONTROL = "pinned (control)"


@dataclass
class DowntimeScenario:
    model: str
    strategies: list[StrategyName]
    schedule: list[tuple[float, float]]  # (seconds from start, bits per second)
    rate_per_s: float
    duration_s: float
    workdir: Path
    device: DeviceSpec | None = None  # None: the sleep-based slowdown, said in every report
    edge_slowdown: float = 1.0
    edge_threads: int = 1
    profile_repeats: int = 5
    seed: int = 0
    link: LinkKind = LinkKind.PROXY
    repeats: int = 1
    control: bool = True
    hosted: bool = False  # partitions as sessions in one host process per side
    # The controller's codec budget: profile these codecs, measure the lossy ones'
    # accuracy over accuracy_inputs where they could win, and plan under the budget.
    codecs: tuple[str, ...] = ()
    accuracy_inputs: int = 256
    max_top1_disagreement: float | None = None

    @property
    def runs(self) -> list[str]:
        return [s.value for s in self.strategies] + ([CONTROL] if self.control else [])

    @property
    def profile_slowdown(self) -> float:
        """How much slower than this machine the edge profile is scaled."""
        return 1 / self.device.speed if self.device else self.edge_slowdown

    def emulated(self) -> dict[str, str]:
        """What was emulated, in words, for every table."""
        if self.device is not None:
            edge = self.device.describe()
        elif self.edge_slowdown > 1:
            edge = (
                f"sleep-based slowdown x{self.edge_slowdown:g} (no edge device made of cgroups); "
                "the edge may use all of this machine's CPUs, and loads and warm-ups are not "
                "slowed"
            )
        else:
            edge = "none: the edge runs at this machine's speed"
        return {
            "edge": edge,
            "link": LINK_DESCRIPTIONS[self.link] + "; no RTT emulated (netem is unavailable)",
        }


@dataclass
class MemorySample:
    """Edge memory, and what the controller believed at that moment (for diagnosis)."""

    at_s: float
    cgroup_bytes: int | None
    pss_bytes: int
    estimate_bps: float | None = None
    decision: str | None = None


@dataclass
class RawRun:
    records: list[RequestRecord]
    history: list[SwitchRecord]
    memory: list[MemorySample] = field(default_factory=list)
    started_unix: float = 0.0
    cgroup_peak_bytes: int | None = None
    # (seconds since the client started, the controller's bandwidth estimate), finely
    # sampled: the estimate's own reaction is measured against the link's schedule.
    estimates: list[tuple[float, float | None]] = field(default_factory=list)


def edge_budget(device: DeviceSpec | None) -> dict[str, int]:
    """Pipelines may fill 80% of the device's memory limit, not more (the controller's
    default, from the limit the edge reports; set here as well so the report says it)."""
    if device is None:
        return {}
    return {"edge_memory_budget": round(device.memory_bytes * 0.8)}


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
            scenario.profile_slowdown,
            scenario.profile_repeats,
            codecs=scenario.codecs,
        ),
        progress,
    )
    budget: dict[str, object] = {"codecs": list(scenario.codecs)}
    tolerance = ATOL_OF_SCALE
    if scenario.codecs and scenario.max_top1_disagreement is not None:
        prepared, accuracy_cuts = _with_accuracy(scenario, prepared, progress)
        tolerance = answer_tolerance(
            read_profile(prepared.edge_profile), scenario.max_top1_disagreement
        )
        budget |= {
            "max_top1_disagreement": scenario.max_top1_disagreement,
            "accuracy_inputs": scenario.accuracy_inputs,
            "accuracy_cuts": accuracy_cuts,
            "answer_tolerance_of_scale": tolerance,
        }
    cases = reference_cases(
        prepared.model_file, prepared.manifest.model.inputs[0], seed=scenario.seed
    )
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in scenario.runs}
    for repeat in range(1, scenario.repeats + 1):
        for name in scenario.runs:
            progress(f"[{repeat}/{scenario.repeats}] {name}: the {scenario.duration_s:g} s run ...")
            raw = _run_one(scenario, name, prepared, cases, repeat, tolerance)
            run = analyse(raw, scenario)
            runs[name].append(run)
            progress(f"[{repeat}/{scenario.repeats}] {name}: {summary_line(run)}")
    return {
        "benchmark": "downtime",
        "model": prepared.manifest.model.name,
        "emulated": scenario.emulated(),
        "link": LINK_DESCRIPTIONS[scenario.link],
        "schedule": [{"at_s": at, "bps": bps} for at, bps in scenario.schedule],
        "rate_per_s": scenario.rate_per_s,
        "duration_s": scenario.duration_s,
        "repeats": scenario.repeats,
        "hosted_partitions": scenario.hosted,
        "codec_budget": budget,
        "edge_threads": scenario.edge_threads,
        "seed": scenario.seed,
        "machine": machine(),
        "versions": {"onnxruntime": onnxruntime.__version__},
        "summary": {name: summarize(name_runs) for name, name_runs in runs.items()},
        "runs": runs,
    }


def _with_accuracy(
    scenario: DowntimeScenario, prepared: Prepared, progress: Callable[[str], None]
) -> tuple[Prepared, list[int]]:
    """``prepared`` with an edge profile that holds the lossy codecs' accuracy wherever
    it can change the best three at the schedule's bandwidths, and those cuts."""
    codecs = [Codec.parse(name) for name in scenario.codecs]
    edge, cuts = accuracy_where_it_matters(
        prepared.manifest,
        (read_profile(prepared.edge_profile), read_profile(prepared.cloud_profile)),
        CodecBudget(scenario.max_top1_disagreement),
        measure=cached_measure(
            prepared.partitions, codecs, inputs=scenario.accuracy_inputs, progress=progress
        ),
        bandwidths=sorted({bps for _, bps in scenario.schedule}),
        top=3,
    )
    path = prepared.edge_profile.with_name(
        f"{prepared.edge_profile.stem}-acc{scenario.accuracy_inputs}.json"
    )
    write_profile(path, edge)
    return dataclasses.replace(prepared, edge_profile=path), cuts


def answer_tolerance(profile: Profile, max_top1_disagreement: float) -> float:
    """How far a served answer may be from the fp32 one (a share of its largest
    magnitude): twice the largest error measured for a lossy codec the budget allows,
    since the probe's inputs are not the ones measured; the split's own rounding at
    least."""
    allowed = [
        found.max_relative_error
        for cut in profile.cuts
        for found in cut.accuracy
        if found.top1_agreement is not None and 1 - found.top1_agreement <= max_top1_disagreement
    ]
    return max(ATOL_OF_SCALE, 2 * max(allowed, default=0.0))


def _run_one(
    scenario: DowntimeScenario,
    name: str,
    prepared: Prepared,
    cases: list[ProbeCase],
    repeat: int,
    tolerance: float,
) -> RawRun:
    logs = scenario.workdir / "bench-logs" / f"{name.split()[0]}-{repeat}"
    device = EdgeDevice(scenario.device).open() if scenario.device is not None else None
    try:
        raw = _serve_through_schedule(scenario, name, prepared, cases, logs, device, tolerance)
        if device is not None:
            raw.cgroup_peak_bytes = device.memory()[1]  # pipelines still starting included
        return raw
    finally:
        if device is not None:
            device.close()


def _serve_through_schedule(
    scenario: DowntimeScenario,
    name: str,
    prepared: Prepared,
    cases: list[ProbeCase],
    logs: Path,
    device: EdgeDevice | None,
    tolerance: float,
) -> RawRun:
    strategy = StrategyName.SWITCH_ON_DEMAND if name == CONTROL else StrategyName(name)
    placement = device.command_prefix if device is not None else None
    link, backend = open_link(
        scenario.link,
        rate_bps=scenario.schedule[0][1],
        state_dir=logs / "state",
        edge_placement=placement,
    )
    try:
        with embedded_stack(
            prepared,
            state_dir=logs / "state",
            strategy=strategy,
            link=link,
            backend=backend,
            edge_threads=scenario.edge_threads,
            edge_slowdown=1.0 if device is not None else scenario.edge_slowdown,
            initial_bandwidth=format_bandwidth(scenario.schedule[0][1]),
            edge_placement=placement,
            settings={
                "auto": name != CONTROL,
                "hosted_partitions": scenario.hosted,
                "max_top1_disagreement": scenario.max_top1_disagreement,
                **edge_budget(scenario.device),
            },
        ) as stack:
            client = ProbeClient(
                url=stack.infer_url,
                input_name=prepared.manifest.model.inputs[0].name,
                cases=cases,
                rate_per_s=scenario.rate_per_s,
                atol_of_scale=tolerance,
            )
            return asyncio.run(
                _drive(scenario, stack.controller, client, link, stack.gateway, device)
            )
    finally:
        link.close()


async def _drive(
    scenario: DowntimeScenario,
    controller: Controller,
    client: ProbeClient,
    link: ShapedLink | TcLink,
    gateway: LocalService,
    device: EdgeDevice | None,
) -> RawRun:
    async with controller.running():
        stop = asyncio.Event()
        raw = RawRun([], [], started_unix=time.time())
        client.started = time.perf_counter()
        traffic = asyncio.create_task(client.run(stop))
        sampler = asyncio.create_task(_sample_memory(controller, gateway, client, device, raw))
        estimates = asyncio.create_task(_sample_estimate(controller, client, raw))
        try:
            for at, rate in scenario.schedule[1:]:
                await asyncio.sleep(max(0.0, at - (time.perf_counter() - client.started)))
                link.set_rate(rate)
            await asyncio.sleep(
                max(0.0, scenario.duration_s - (time.perf_counter() - client.started))
            )
        finally:
            stop.set()
            raw.records = await traffic
            sampler.cancel()
            estimates.cancel()
            await asyncio.gather(sampler, estimates, return_exceptions=True)
            raw.history = list(controller.history)
    return raw


async def _sample_memory(
    controller: Controller,
    gateway: LocalService,
    client: ProbeClient,
    device: EdgeDevice | None,
    raw: RawRun,
) -> None:
    """The edge device's cgroup (every process in it, pipelines still starting included),
    and PSS of the gateway and the registered edge partitions beside it."""
    while True:
        pids = {gateway.process.pid} if gateway.process else set()
        # A hosted partition's id is its host's pid, then its name: count each host once.
        pids |= {int(p.edge.backend_id.split("/")[0]) for p in list(controller.pipelines.values())}
        pss, _ = await asyncio.to_thread(edge_memory, sorted(pids))
        cgroup = device.memory()[0] if device is not None else None
        at = time.perf_counter() - client.started
        estimate, decision = controller.estimator.current, controller.last_decision
        raw.memory.append(MemorySample(at, cgroup, pss, estimate, decision))
        await asyncio.sleep(MEMORY_EVERY_S)


async def _sample_estimate(controller: Controller, client: ProbeClient, raw: RawRun) -> None:
    while True:
        at = time.perf_counter() - client.started
        raw.estimates.append((at, controller.estimator.current))
        await asyncio.sleep(ESTIMATE_EVERY_S)


def estimate_reaction(
    estimates: Sequence[tuple[float, float | None]], change_s: float, end_s: float, bps: float
) -> dict[str, float | None]:
    """How soon after a change of the link's rate the controller's estimate came within
    ESTIMATE_WITHIN of it, and what share of the phase's samples from one second after
    the change on stayed there (a reading that touches the rate once and wanders off does
    not count as tracking)."""

    def within(value: float | None) -> bool:
        return value is not None and abs(value - bps) <= ESTIMATE_WITHIN * bps

    phase = [(at, value) for at, value in estimates if change_s <= at < end_s]
    first = next((at for at, value in phase if within(value)), None)
    later = [value for at, value in phase if at >= change_s + 1.0]
    return {
        "estimate_within_s": None if first is None else round(first - change_s, 3),
        "estimate_share_within": round(sum(map(within, later)) / len(later), 3) if later else None,
    }


# -- analysis ------------------------------------------------------------------------


def analyse(raw: RawRun, scenario: DowntimeScenario) -> dict[str, object]:
    records = raw.records
    times = [at for at, _ in scenario.schedule]
    changes = reactions(records, times, scenario.duration_s)
    ends = [*times[2:], scenario.duration_s]
    for change, (at, bps), end in zip(changes, scenario.schedule[1:], ends, strict=False):
        change.update(estimate_reaction(raw.estimates, at, end, bps))
    switches = [_switch_view(r, raw.started_unix, times, scenario, records) for r in raw.history]
    first_change = times[1] if len(times) > 1 else scenario.duration_s
    return {
        "requests": len(records),
        "failed": sum(not r.ok for r in records),
        "wrong_answers": sum(r.status == 200 and not r.correct for r in records),
        "failure_reasons": failure_reasons(records),
        "answered_on_the_edge": sum(1 for r in records if r.ok and r.fallback),
        "answered_on_the_edge_by_reason": dict(
            Counter(r.local for r in records if r.ok and r.local is not None)
        ),
        "longest_gap_s": longest_gap(records),
        "reactions": changes,
        "switches": switches,
        "edge_memory": _memory_view(raw, first_change),
        "memory_trace": [[round(m.at_s, 3), m.cgroup_bytes, m.pss_bytes] for m in raw.memory],
        "controller_trace": [[round(m.at_s, 3), m.estimate_bps, m.decision] for m in raw.memory],
        # Per request: sent, done, status, correct, cut, why the edge answered it on its
        # own tail (None: the cloud did, or nothing crossed the link), and the codec that
        # crossed (None: none).
        "trace": [
            [round(r.sent_s, 4), round(r.done_s, 4), r.status, r.correct, r.cut, r.local, r.codec]
            for r in records
        ],
    }


def _memory_view(raw: RawRun, first_change: float) -> dict[str, float | None]:
    def mb(value: float | None) -> float | None:
        return None if value is None else round(value / 2**20, 1)

    before = [m for m in raw.memory if m.at_s < first_change]
    cgroup_before = [m.cgroup_bytes for m in before if m.cgroup_bytes is not None]
    cgroup_all = [m.cgroup_bytes for m in raw.memory if m.cgroup_bytes is not None]
    return {
        "cgroup_steady_mb": mb(float(np.median(cgroup_before))) if cgroup_before else None,
        "cgroup_peak_mb": mb(raw.cgroup_peak_bytes or max(cgroup_all, default=0) or None),
        "pss_steady_mb": mb(float(np.median([m.pss_bytes for m in before]))) if before else None,
        "pss_peak_mb": mb(max((m.pss_bytes for m in raw.memory), default=0)),
    }


def _switch_view(
    record: SwitchRecord,
    started_unix: float,
    times: list[float],
    scenario: DowntimeScenario,
    records: list[RequestRecord],
) -> dict[str, object]:
    trigger = record.trigger_unix - started_unix
    change = max((c for c in times[1:] if c <= trigger), default=0.0)
    phase_end = min((c for c in times if c > trigger), default=scenario.duration_s)
    view: dict[str, object] = {
        "from_cut": record.from_cut,
        "to_cut": record.to_cut,
        "from_codec": record.from_codec,
        "to_codec": record.to_codec,
        "outcome": record.outcome.value,
        "reason": record.reason,
        "change_s": round(change, 3),
        "detected_after_s": round(trigger - change, 3),
        "ready_after_s": _after(trigger, record.ready_after_s, change),
        "flipped_after_s": _after(trigger, record.switched_after_s, change),
        "unavailable_s": record.unavailable_s,
        "warm": record.warm,
    }
    if record.switched_after_s is not None:
        target = served_option(record.to_cut, record.to_codec)
        steady = steady_latencies(records, target, change, phase_end)
        median = float(np.median(steady)) if steady else None
        view |= switch_cost(records, trigger + record.switched_after_s, target, median)
    return view


def _after(trigger: float, seconds: float | None, change: float) -> float | None:
    return None if seconds is None else round(trigger + seconds - change, 3)


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


# -- over repeats ----------------------------------------------------------------------

REACTION_FIELDS = (
    "to_right_cut_s",
    "window_p99_s",
    "steady_p99_s",
    "p99_over_steady",
    "window_max_s",
    "excess_request_s",
    "failed",
    "estimate_within_s",
    "estimate_share_within",
)


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that exist."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return {
        "median": round(float(np.median(present)), 4),
        "min": round(min(present), 4),
        "max": round(max(present), 4),
    }


def summarize(runs: list[dict[str, object]]) -> dict[str, object]:
    """Median and range over the repeats of one strategy."""
    changes = max((len(run["reactions"]) for run in runs), default=0)  # type: ignore[arg-type]
    per_change = []
    for index in range(changes):
        of_change = [run["reactions"][index] for run in runs if len(run["reactions"]) > index]  # type: ignore[index, arg-type]
        summary = {name: spread([r[name] for r in of_change]) for name in REACTION_FIELDS}
        summary["settled_cuts"] = sorted({r["settled_cut"] for r in of_change}, key=str)
        summary["cut_before"] = sorted({r["cut_before"] for r in of_change}, key=str)
        per_change.append(summary)
    switches = [s for run in runs for s in run["switches"]]  # type: ignore[attr-defined]
    flipped = [s for s in switches if "in_flight_max_s" in s]
    memory = [run["edge_memory"] for run in runs]
    return {
        "requests": spread([run["requests"] for run in runs]),  # type: ignore[misc]
        "failed": spread([run["failed"] for run in runs]),  # type: ignore[misc]
        "wrong_answers": spread([run["wrong_answers"] for run in runs]),  # type: ignore[misc]
        "reactions": per_change,
        "switches_per_run": spread([len(run["switches"]) for run in runs]),  # type: ignore[arg-type]
        "switches_to_a_warm_cut": sum(1 for s in switches if s.get("warm")),
        "switches": len(switches),
        "unavailable_s": spread([s["unavailable_s"] for s in switches]),
        "in_flight_max_s": spread([s["in_flight_max_s"] for s in flipped]),
        "first_on_new_max_s": spread([s["first_on_new_max_s"] for s in flipped]),
        "new_steady_median_s": spread([s["new_steady_median_s"] for s in flipped]),
        "edge_memory": {
            key: spread([m[key] for m in memory])  # type: ignore[index]
            for key in ("cgroup_steady_mb", "cgroup_peak_mb", "pss_steady_mb", "pss_peak_mb")
        },
    }


# -- printing ------------------------------------------------------------------------------


def summary_line(run: dict[str, object]) -> str:
    unavailable = ", ".join(
        format_unavailability(s["unavailable_s"])  # type: ignore[index]
        for s in run["switches"]  # type: ignore[attr-defined]
        if s["unavailable_s"] is not None  # type: ignore[index]
    )
    cuts = "; ".join(
        f"{r['cut_before']}→{r['settled_cut']} in {r['to_right_cut_s']} s, "
        f"p99 {r['window_p99_s']} s"
        for r in run["reactions"]  # type: ignore[attr-defined]
    )
    return (
        f"{run['failed']} failed of {run['requests']}; {cuts}; "
        f"admission unavailable [{unavailable or 'no switch'}]"
    )


def _cell(value: dict[str, float] | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if value["min"] == value["max"]:
        return f"{value['median']:g}{unit}"
    return f"{value['median']:g}{unit} [{value['min']:g}–{value['max']:g}]"


def _unavailability_cell(value: dict[str, float] | None) -> str:
    if value is None:
        return "no switch"
    if value["max"] == 0:
        return "0 (the pointer is never empty)"
    return _cell(value, " s")


def markdown_table(report: dict[str, object]) -> str:
    emulated = report["emulated"]  # type: ignore[index]
    repeats = report["repeats"]
    lines = [
        f"Emulated edge: {emulated['edge']}. Link: {emulated['link']}. "  # type: ignore[index]
        f"{report['rate_per_s']:g} req/s open loop, {repeats} repeat(s): median [min–max]."
        + (
            " Partitions hosted: one edge and one cloud host process."
            if report.get("hosted_partitions")
            else ""
        ),
        "",
        "| run | change | cut before → settled | change → right cut (s) | p99 in the 10 s "
        "after (s) | steady p99 of the settled cut (s) | p99 / steady | max in the 10 s after "
        "(s) | excess request-s | failed in phase | estimate within 25% after (s) | share of the "
        "phase within 25% (from 1 s on) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    schedule = report["schedule"]  # type: ignore[index]
    for name, summary in report["summary"].items():  # type: ignore[union-attr]
        for index, change in enumerate(summary["reactions"]):
            step = schedule[index + 1]
            before = "/".join(str(c) for c in change["cut_before"])
            settled = "/".join(str(c) for c in change["settled_cuts"])
            cells = [
                name,
                f"{format_bandwidth(schedule[index]['bps'])} → {format_bandwidth(step['bps'])} "
                f"at {step['at_s']:g} s",
                f"{before} → {settled}",
                _cell(change["to_right_cut_s"]),
                _cell(change["window_p99_s"]),
                _cell(change["steady_p99_s"]),
                _cell(change["p99_over_steady"], "x"),
                _cell(change["window_max_s"]),
                _cell(change["excess_request_s"]),
                _cell(change["failed"]),
                _cell(change["estimate_within_s"]),
                _cell(change["estimate_share_within"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| run | failed / wrong / sent | switches per run | to a cut already warm | admission "
        "unavailability | in flight across a flip, max (s) | first 20 on the new pipeline, max "
        "(s) | its steady median (s) | edge memory, cgroup steady / peak (MB) | PSS steady / "
        "peak (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in report["summary"].items():  # type: ignore[union-attr]
        memory = summary["edge_memory"]
        cells = [
            name,
            f"{_cell(summary['failed'])} / {_cell(summary['wrong_answers'])} / "
            f"{_cell(summary['requests'])}",
            _cell(summary["switches_per_run"]),
            f"{summary.get('switches_to_a_warm_cut', 0)} of {summary.get('switches', 0)}",
            _unavailability_cell(summary["unavailable_s"]),
            _cell(summary["in_flight_max_s"]),
            _cell(summary["first_on_new_max_s"]),
            _cell(summary["new_steady_median_s"]),
            f"{_cell(memory['cgroup_steady_mb'])} / {_cell(memory['cgroup_peak_mb'])}",
            f"{_cell(memory['pss_steady_mb'])} / {_cell(memory['pss_peak_mb'])}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
