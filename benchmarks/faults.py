"""Faults under traffic, measured: what each costs in failed requests and recovery time.

    python benchmarks/faults.py --out results/faults.json

The scenarios of testbed/faults.py (the same ones tests/controller/test_faults.py
asserts on), each on a fresh stack: the slow-edge tiny model, a real gateway and
partition processes, the user-space shaped link at 50 mbit, the controller in this
process, 10 requests/s open loop checked against the full model.

- cloud killed: kill -9 of the active cloud partition;
- cloud hung: SIGSTOP of it (accepts connections, never answers);
- edge killed: kill -9 of the active edge partition, with switch_standby (the gateway
  retries what the dead edge never answered on a standby until the controller has
  replaced the pipeline);
- flapping: the link alternates 7 / 14 mbit every 1.5 s for 30 s around the 9.8 mbit
  boundary between cut 0 and cut 11;
- collapse: the link drops to 20 kbit and stays there.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path

import onnx

from controller.embedded import embedded_stack
from controller.settings import StrategyName
from models.prepare import Prepared
from models.zoo import build_model
from testbed.faults import (
    HIGH,
    collapse,
    flapping,
    partition_fault,
    serve_while,
    slow_edge_tiny,
    tiny_probe_client,
)
from testbed.report import machine, write_json
from testbed.shaped_link import ShapedLink

SCENARIOS = ("cloud killed", "cloud hung", "edge killed", "flapping", "collapse")
STRATEGY = {"flapping": StrategyName.SWITCH_STANDBY, "edge killed": StrategyName.SWITCH_STANDBY}


def run_one(name: str, prepared: Prepared, work: Path) -> dict[str, object]:
    link = ShapedLink(rate_bps=HIGH).start_in_thread()
    try:
        with embedded_stack(
            prepared,
            state_dir=work / name.replace(" ", "-"),
            strategy=STRATEGY.get(name, StrategyName.SWITCH_ON_DEMAND),
            link=link,
            settings={"auto": name in ("flapping", "collapse")},
        ) as stack:
            controller = stack.controller
            client = tiny_probe_client(stack.gateway.url, prepared)
            url = stack.gateway.url
            steps = {
                "cloud killed": lambda: partition_fault(controller, url, signal.SIGKILL),
                "cloud hung": lambda: partition_fault(controller, url, signal.SIGSTOP),
                "edge killed": lambda: partition_fault(
                    controller, url, signal.SIGKILL, role="edge"
                ),
                "flapping": lambda: flapping(link, low=7e6, high=14e6, period_s=1.5, flips=20),
                "collapse": lambda: collapse(controller, link, rate_bps=20e3),
            }[name]()
            return asyncio.run(serve_while(controller, client, name, steps)).summary()
    finally:
        link.stop()


def print_table(rows: list[dict[str, object]]) -> None:
    print(
        "| fault | requests | failed | answered by the edge's fallback | "
        "fault → controller moved (s) | switches | slowest request (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['fault']} | {row['requests']} | {row['failed']} "
            f"| {row['answered_by_fallback']} | {row['recovered_after_s']} "
            f"| {row['switches']} | {row['slowest_latency_s']} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", default="results/faults.json")
    args = parser.parse_args()
    names = [name.strip() for name in args.scenarios.split(",")]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="neukonfig-faults-") as tmp:
        work = Path(tmp)
        onnx.save(build_model("tiny"), str(work / "tiny.onnx"))
        prepared = slow_edge_tiny(work / "tiny.onnx", work)
        rows = []
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(run_one(name, prepared, work))
    print_table(rows)
    report = {"benchmark": "faults", "machine": machine(), "scenarios": rows}
    print(f"\nwrote {write_json(args.out, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
