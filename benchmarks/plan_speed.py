"""How long one plan takes: ``Planner.best`` on a synthetic 100-cut model.

The controller asks for a plan on every bandwidth estimate, so a plan must cost far
less than 1 ms. Builds a planner from seeded random per-cut costs (the numbers do not
change the work done), then times many calls at varying bandwidths.

    python benchmarks/plan_speed.py --out results/plan_speed.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

from models.crossover import crossover_table
from models.planner import Planner
from models.profiler import machine_info
from models.switch_policy import SwitchPolicy
from neukonfig.manifest import CutKind, CutSpec
from testbed.report import write_json


def synthetic_planner(cuts: int, *, seed: int = 0) -> Planner:
    rng = np.random.default_rng(seed)
    kinds = [CutKind.ALL_CLOUD, *[CutKind.SPLIT] * (cuts - 2), CutKind.ALL_EDGE]
    specs = [
        CutSpec(
            index=i,
            kind=kind,
            tensor=None if kind is CutKind.ALL_EDGE else f"t{i}",
            shape=None,
            dtype="float32",
            bytes=0,
            head=None,
            tail=None,
        )
        for i, kind in enumerate(kinds)
    ]
    edge = np.sort(rng.uniform(0, 0.5, cuts))
    edge[0] = 0.0
    return Planner(
        model=f"synthetic-{cuts}",
        cuts=specs,
        edge_s=edge.tolist(),
        cloud_s=np.sort(rng.uniform(0, 0.05, cuts))[::-1].tolist(),
        serialization_s=rng.uniform(0, 1e-3, cuts).tolist(),
        frame_bytes=[*rng.integers(1_000, 5_000_000, cuts - 1).tolist(), 0],
    )


def time_per_call(call: Callable[[float], object], bandwidths: np.ndarray) -> dict[str, float]:
    """Mean and median microseconds per call, over batches of calls (timer cost amortised)."""
    batch = 100
    per_call = []
    for start in range(0, len(bandwidths), batch):
        chunk = bandwidths[start : start + batch]
        started = time.perf_counter()
        for bandwidth in chunk:
            call(bandwidth)
        per_call.append((time.perf_counter() - started) / len(chunk))
    values = np.asarray(per_call) * 1e6
    return {"mean_us": float(values.mean()), "median_us": float(np.median(values))}


def bench(cuts: int, calls: int) -> list[dict[str, object]]:
    planner = synthetic_planner(cuts)
    bandwidths = np.geomspace(1e5, 1e10, calls)
    rng = np.random.default_rng(1)
    rng.shuffle(bandwidths)
    policy = SwitchPolicy(planner)
    clock = iter(np.arange(calls * 2) * 0.1)
    operations: dict[str, Callable[[float], object]] = {
        "Planner.best": lambda b: planner.best(float(b), 0.02),
        "Planner.predict": lambda b: planner.predict(float(b), 0.02),
        "SwitchPolicy.decide": lambda b: policy.decide(
            current=0, bandwidth_bps=float(b), now_s=float(next(clock)), rtt_s=0.02
        ),
        "Planner.ranked": lambda b: planner.ranked(float(b), 0.02),
    }
    rows = []
    for name, call in operations.items():
        for bandwidth in bandwidths[:200]:  # warm-up
            call(bandwidth)
        rows.append(
            {"cuts": cuts, "operation": name, "calls": calls, **time_per_call(call, bandwidths)}
        )
    started = time.perf_counter()
    for _ in range(100):
        crossover_table(planner, low_bps=1e6, high_bps=1e9)
    sweep_us = (time.perf_counter() - started) / 100 * 1e6
    rows.append(
        {
            "cuts": cuts,
            "operation": "crossover_table 1mbit:1gbit",
            "calls": 100,
            "mean_us": sweep_us,
            "median_us": sweep_us,
        }
    )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| cuts | operation | calls | mean µs | median µs |", "|---:|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['cuts']} | {row['operation']} | {row['calls']} "
            f"| {row['mean_us']:.1f} | {row['median_us']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/plan_speed.json", help="JSON output file")
    parser.add_argument("--cuts", default="100", help="comma list of cut counts")
    parser.add_argument("--calls", type=int, default=100_000, help="calls per operation")
    args = parser.parse_args()
    rows = [row for cuts in args.cuts.split(",") for row in bench(int(cuts), args.calls)]
    report = {
        "benchmark": "plan_speed",
        "machine": machine_info().model_dump(),
        "platform": platform.platform(),
        "python": sys.version,
        "numpy": np.__version__,
        "rows": rows,
    }
    out = write_json(args.out, report)
    print(table(rows))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
