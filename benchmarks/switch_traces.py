"""Switch counts of the switch policy on synthetic bandwidth traces, against naive rules.

The planner is the hand-made three-cut profile of the tests (exact crossovers at 10
and 40 mbit); estimates arrive at 10 Hz. Columns: the default policy, the naive rule
(follow the best cut on every estimate), and the policy with only one of its two
guards (minimum gain without dwell, dwell without minimum gain).

    python benchmarks/switch_traces.py --out results/switch_traces.json
"""

from __future__ import annotations

import argparse

from models.planner import Planner
from models.switch_policy import SwitchPolicy, SwitchRule, replay
from models.traces import Trace, naive_switches, noise_around, ramp, square_wave, wander
from neukonfig.manifest import CutKind, CutSpec
from testbed.report import write_json

RATE_HZ = 10.0
UPPER_CROSSOVER_BPS = 40e6
RULES = {
    "policy": SwitchRule(),
    "gain band only": SwitchRule(dwell_s=0.0, min_estimates=1),
    "dwell only": SwitchRule(min_gain_s=0.0, min_gain_fraction=0.0),
}


def three_cut_planner() -> Planner:
    """The tests' hand-made case: latency = 10 ms + 1.6 Mbit/B (all-cloud),
    40 ms + 0.4 Mbit/B (split), 80 ms (all-edge); crossovers at 40 and 10 mbit."""
    kinds = (CutKind.ALL_CLOUD, CutKind.SPLIT, CutKind.ALL_EDGE)
    frame_bytes = (200_000, 50_000, 0)
    cuts = [
        CutSpec(
            index=i, kind=k, tensor=f"t{i}", shape=None, dtype=None, bytes=b, head=None, tail=None
        )
        for i, (k, b) in enumerate(zip(kinds, frame_bytes, strict=True))
    ]
    return Planner(
        model="three-cuts",
        cuts=cuts,
        edge_s=[0.0, 0.030, 0.080],
        cloud_s=[0.010, 0.010, 0.0],
        serialization_s=[0.0, 0.0, 0.0],
        frame_bytes=frame_bytes,
    )


def traces() -> dict[str, Trace]:
    found = {
        "square wave 50/5 mbit, 30 s levels, 5 periods": square_wave(
            high=50e6, low=5e6, half_period_s=30.0, periods=5, rate_hz=RATE_HZ
        )
    }
    for noise in (0.0, 0.05):
        for start, end in ((50e6, 5e6), (5e6, 50e6)):
            name = f"ramp {start / 1e6:g} -> {end / 1e6:g} mbit over 300 s, noise ±{noise:.0%}"
            found[name] = ramp(
                start=start, end=end, duration_s=300.0, rate_hz=RATE_HZ, noise=noise, seed=7
            )
    for seed in range(5):
        found[f"noise ±20% around 40 mbit, seed {seed}"] = noise_around(
            UPPER_CROSSOVER_BPS, spread=0.20, samples=1000, rate_hz=RATE_HZ, seed=seed
        )
    found["wander ±3% around 40 mbit, 30 s period"] = wander(
        UPPER_CROSSOVER_BPS, amplitude=0.03, period_s=30.0, samples=1200, rate_hz=RATE_HZ
    )
    return found


def count(planner: Planner, name: str, trace: Trace) -> dict[str, object]:
    start = planner.best(trace[0][1]).cut
    row: dict[str, object] = {"trace": name, "samples": len(trace)}
    for label, rule in RULES.items():
        row[label] = len(replay(SwitchPolicy(planner, rule=rule), trace, start_cut=start))
    row["naive"] = naive_switches(planner, trace, start=start)
    return row


def table(rows: list[dict[str, object]]) -> str:
    columns = ["trace", "samples", "policy", "naive", *list(RULES)[1:]]
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/switch_traces.json", help="JSON output file")
    args = parser.parse_args()
    planner = three_cut_planner()
    rows = [count(planner, name, trace) for name, trace in traces().items()]
    rules = {label: vars(rule) for label, rule in RULES.items()}
    report = {"benchmark": "switch_traces", "rate_hz": RATE_HZ, "rules": rules, "rows": rows}
    out = write_json(args.out, report)
    print(table(rows))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
