"""Soak: thousands of requests across many switches, every strategy, nothing lost.

    python benchmarks/soak.py --model mobilenetv2 --requests 10000 --switches 24 \
        --out results/soak.json

The embedded stack (a real gateway, partition processes, the controller in this
process, no link shaping) serves an open-loop client while the controller switches
every few seconds, cycling through cuts from the far ends to the middle of the model
and through the three strategies. Requests rotate over 8 seeded inputs, each answer
checked against the original model's. Reported: requests sent, failed, wrong; latency
percentiles overall and by phase (the first and the last fifth of the run); each
switch's strategy, cuts and admission unavailability; the gateway's memory (it lives
through every switch: growth there would be a leak) and the edge side's at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime

from controller.core import Controller
from controller.embedded import embedded_stack
from controller.history import Outcome, format_unavailability
from controller.settings import StrategyName
from models.prepare import PrepareOptions, prepare
from testbed.downtime import edge_memory
from testbed.probe_client import ProbeClient, RequestRecord, reference_cases
from testbed.report import machine, write_json


def percentiles_ms(records: list[RequestRecord]) -> dict[str, float]:
    latencies = [r.latency_s for r in records if r.ok]
    if not latencies:
        return {}
    return {f"p{q}": round(float(np.percentile(latencies, q)) * 1000, 2) for q in (50, 90, 99, 100)}


def switch_plan(num_cuts: int, switches: int) -> list[tuple[int, StrategyName]]:
    """Cuts from the ends inwards (all-cloud, all-edge, a quarter, three quarters, the
    middle), each strategy in turn; consecutive entries always differ in cut."""
    last = num_cuts - 1
    cuts = [0, last, last // 4, 3 * last // 4, last // 2]
    strategies = itertools.cycle(list(StrategyName))
    targets = itertools.islice(itertools.cycle(cuts[1:] + cuts[:1]), switches)
    return list(zip(targets, strategies, strict=False))


def memory_mb(pids: list[int]) -> float:
    return round(edge_memory(pids)[0] / 2**20, 1)


async def soak(
    controller: Controller, client: ProbeClient, args: argparse.Namespace, gateway_pid: int
) -> tuple[list[RequestRecord], dict[str, dict[str, float]]]:
    async with controller.running():
        return await _switch_under_traffic(controller, client, args, gateway_pid)


async def _switch_under_traffic(
    controller: Controller, client: ProbeClient, args: argparse.Namespace, gateway_pid: int
) -> tuple[list[RequestRecord], dict[str, dict[str, float]]]:
    stop = asyncio.Event()
    traffic = asyncio.create_task(client.run(stop))
    duration = args.requests / args.rate
    plan = switch_plan(controller.launcher.last_cut + 1, args.switches)
    interval = duration / (len(plan) + 1)
    memory = {"start": await _memory(controller, gateway_pid)}
    try:
        for number, (cut, strategy) in enumerate(plan, start=1):
            await asyncio.sleep(interval)
            record = await controller.switch_to(cut, strategy=strategy, reason="soak")
            print(
                f"switch {number}/{len(plan)}: {record.strategy} {record.from_cut} -> "
                f"{record.to_cut} {record.outcome.value}, {len(client.records)} answered",
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(max(0.0, duration - interval * len(plan)))
        memory["end"] = await _memory(controller, gateway_pid)
    finally:
        stop.set()
        records = await traffic
    return records, memory


async def _memory(controller: Controller, gateway_pid: int) -> dict[str, float]:
    edge = [int(p.edge.backend_id) for p in controller.pipelines.values() if p.edge is not None]
    return {
        "gateway_pss_mb": memory_mb([gateway_pid]),
        "edge_pss_mb": memory_mb([gateway_pid, *edge]),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(args.workdir)
    prepared = prepare(PrepareOptions(args.model, workdir))
    spec = prepared.manifest.model.inputs[0]
    with embedded_stack(
        prepared,
        state_dir=workdir / "soak-logs",
        initial_bandwidth="100mbit",
        settings={"auto": False, "max_standby": 1},
    ) as stack:
        client = ProbeClient(
            url=stack.infer_url,
            input_name=spec.name,
            cases=reference_cases(prepared.model_file, spec, seed=args.seed),
            rate_per_s=args.rate,
        )
        assert stack.gateway.process is not None
        records, memory = asyncio.run(
            soak(stack.controller, client, args, stack.gateway.process.pid)
        )
    return report(args, records, memory, stack.controller)


def report(
    args: argparse.Namespace,
    records: list[RequestRecord],
    memory: dict[str, dict[str, float]],
    controller: Controller,
) -> dict[str, object]:
    fifth = max(len(records) // 5, 1)
    switches = [s.as_dict() for s in controller.history]
    return {
        "benchmark": "soak",
        "machine": machine(),
        "onnxruntime": onnxruntime.__version__,
        "model": args.model,
        "rate_per_s": args.rate,
        "requests": len(records),
        "failed": sum(1 for r in records if r.status != 200),
        "wrong": sum(1 for r in records if r.status == 200 and not r.correct),
        "latency_ms": {
            "all": percentiles_ms(records),
            "first_fifth": percentiles_ms(records[:fifth]),
            "last_fifth": percentiles_ms(records[-fifth:]),
        },
        "switches": len(switches),
        "switched": sum(1 for s in controller.history if s.outcome is Outcome.SWITCHED),
        "by_strategy": {
            name.value: [s["unavailable_s"] for s in switches if s["strategy"] == name.value]
            for name in StrategyName
        },
        "memory": memory,
        "switch_records": switches,
    }


def print_table(result: dict[str, object]) -> None:
    latency = result["latency_ms"]
    memory = result["memory"]
    print("| model | requests | failed | wrong | switches (switched) | p50 / p99 / max ms |")
    print("|---|---:|---:|---:|---:|---|")
    overall = latency["all"]
    print(
        f"| {result['model']} | {result['requests']} | {result['failed']} | {result['wrong']} "
        f"| {result['switches']} ({result['switched']}) "
        f"| {overall.get('p50')} / {overall.get('p99')} / {overall.get('p100')} |"
    )
    print(f"\nlatency first fifth {latency['first_fifth']}, last fifth {latency['last_fifth']}")
    print(f"memory start {memory['start']}, end {memory.get('end')}")
    for strategy, unavailable in result["by_strategy"].items():
        shown = ", ".join(format_unavailability(u) for u in unavailable if u is not None)
        print(f"{strategy}: admission unavailable {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--switches", type=int, default=24)
    parser.add_argument("--workdir", default=".neukonfig/bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/soak.json")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(args)
    result["wall_s"] = round(time.monotonic() - started, 1)
    print_table(result)
    print(f"\nwrote {write_json(args.out, result)} in {result['wall_s']} s")
    return 0 if result["failed"] == 0 and result["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
